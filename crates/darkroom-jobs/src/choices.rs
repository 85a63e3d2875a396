//! Routing chosen after a trial: per row or per `group`, which model a job's finals are made with
//! ("Flash is enough" or "needs Photon 1"). The ledger stores the choices; this module only says
//! what they mean for a row, so the loader and `darkroom estimate` read them the same way.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::model::{Metadata, Model, Pass};

/// The metadata column a group choice matches.
pub const GROUP_COLUMN: &str = "group";

/// What a choice covers: one row (by its id) or every row of a `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChoiceScope {
    /// One row, by its id.
    Row,
    /// Every row whose `group` metadata is the key.
    Group,
}

impl ChoiceScope {
    /// `row` or `group`, as stored and as the review page sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceScope::Row => "row",
            ChoiceScope::Group => "group",
        }
    }

    /// The scope named `text` (`row`, `group`), or `None`.
    pub fn parse(text: &str) -> Option<ChoiceScope> {
        match text {
            "row" => Some(ChoiceScope::Row),
            "group" => Some(ChoiceScope::Group),
            _ => None,
        }
    }
}

impl fmt::Display for ChoiceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored choice: the finals of `key`'s rows are made with `model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutingChoice {
    /// A row or a group.
    pub scope: ChoiceScope,
    /// The row id or the group's value.
    pub key: String,
    /// `photon-flash-1` ("Flash is enough") or `photon-1` ("needs Photon 1").
    pub model: Model,
}

/// Every choice made for one job. A row's own choice wins over its group's; a model written in the
/// job file wins over both (the file says so explicitly). Choices route the final pass only:
/// previews are Flash whatever was chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingChoices {
    rows: BTreeMap<String, Model>,
    groups: BTreeMap<String, Model>,
}

impl RoutingChoices {
    /// The choices, later ones replacing earlier ones for the same row or group.
    pub fn new(choices: impl IntoIterator<Item = RoutingChoice>) -> RoutingChoices {
        let mut all = RoutingChoices::default();
        for choice in choices {
            match choice.scope {
                ChoiceScope::Row => all.rows.insert(choice.key, choice.model),
                ChoiceScope::Group => all.groups.insert(choice.key, choice.model),
            };
        }
        all
    }

    /// Whether no choice was made.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.groups.is_empty()
    }

    /// The model chosen for a row of `pass` with no model of its own, and the choice's scope:
    /// the row's own choice, else its group's; `None` for previews and for rows no choice covers.
    pub fn chosen(&self, pass: Pass, row_id: &str, metadata: &Metadata) -> Option<(Model, ChoiceScope)> {
        if pass != Pass::Final {
            return None;
        }
        if let Some(model) = self.rows.get(row_id) {
            return Some((*model, ChoiceScope::Row));
        }
        metadata
            .get(GROUP_COLUMN)
            .and_then(|group| self.groups.get(group))
            .map(|model| (*model, ChoiceScope::Group))
    }

    /// A stable text of every choice (`row:ID=MODEL;group:G=MODEL;...`), for the key a job file's
    /// load is recorded under: a new choice makes the next run load the file again.
    pub fn digest(&self) -> String {
        let rows = self.rows.iter().map(|(k, m)| format!("row:{k}={m};"));
        let groups = self.groups.iter().map(|(k, m)| format!("group:{k}={m};"));
        rows.chain(groups).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(scope: ChoiceScope, key: &str, model: Model) -> RoutingChoice {
        RoutingChoice {
            scope,
            key: key.into(),
            model,
        }
    }

    #[test]
    fn a_row_choice_wins_over_its_group_and_previews_are_never_routed() {
        let choices = RoutingChoices::new([
            choice(ChoiceScope::Group, "coffee", Model::PhotonFlash1),
            choice(ChoiceScope::Row, "coffee-b", Model::Photon1),
        ]);
        let coffee = Metadata::from([(GROUP_COLUMN.to_string(), "coffee".to_string())]);
        assert_eq!(
            choices.chosen(Pass::Final, "coffee-a", &coffee),
            Some((Model::PhotonFlash1, ChoiceScope::Group))
        );
        assert_eq!(
            choices.chosen(Pass::Final, "coffee-b", &coffee),
            Some((Model::Photon1, ChoiceScope::Row))
        );
        assert_eq!(choices.chosen(Pass::Preview, "coffee-a", &coffee), None);
        assert_eq!(choices.chosen(Pass::Final, "other", &Metadata::new()), None);
    }

    #[test]
    fn the_digest_changes_with_any_choice_and_is_empty_without_one() {
        assert_eq!(RoutingChoices::default().digest(), "");
        let a = RoutingChoices::new([choice(ChoiceScope::Group, "g", Model::PhotonFlash1)]);
        let b = RoutingChoices::new([choice(ChoiceScope::Group, "g", Model::Photon1)]);
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), "");
    }
}
