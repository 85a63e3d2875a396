//! A run's scope: the tasks of a pass one command asked for, by task key. `darkroom reframe` and
//! `darkroom promote` add tasks to a pass other commands share; a run scoped to its own keys
//! reopens, prices, sends and skips only those, so leftovers of another command stay as they are
//! for the command that asked for them. Work already in flight is outside any scope: it is paid
//! for, and every run of the pass finishes it.

/// The task keys a run may start, held as the JSON array the queries read with `json_each`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskScope {
    keys_json: String,
    keys: std::sync::Arc<std::collections::BTreeSet<String>>,
}

impl TaskScope {
    /// A scope of these task keys (`ROWID`, `ROWID-VARIANT`, a reframe's `KEY-W-H`).
    pub fn of_keys<I>(keys: I) -> TaskScope
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        TaskScope {
            keys_json: serde_json::Value::from(keys.clone()).to_string(),
            keys: std::sync::Arc::new(keys.into_iter().collect()),
        }
    }

    /// Whether the task of key `task_key` is in the scope.
    pub fn contains(&self, task_key: &str) -> bool {
        self.keys.contains(task_key)
    }

    /// How many task keys the scope holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the scope holds no task at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys as a JSON array, bound where [`in_scope`] asks for it.
    pub(crate) fn json(&self) -> &str {
        &self.keys_json
    }
}

/// What a scoped query binds at `in_scope`'s parameter: NULL for every task.
pub(crate) fn bound(scope: Option<&TaskScope>) -> Option<&str> {
    scope.map(TaskScope::json)
}

/// The condition a scoped query adds over `task_key`, reading parameter `?N`: every task when it
/// is NULL, else the scope's keys.
pub(crate) fn in_scope(n: u8) -> String {
    format!("(?{n} IS NULL OR task_key IN (SELECT value FROM json_each(?{n})))")
}
