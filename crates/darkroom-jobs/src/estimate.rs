//! What a job will cost and how long it must take, before anything is spent.
//!
//! Built from the tasks in file order ([`EstimateBuilder::add`]), so "how many tasks a budget covers"
//! is the number the run would really reach before stopping.

use serde::Serialize;

use crate::model::{Model, Pass};
use crate::money::{Money, PriceTable};

/// The account limits and typical latencies an estimate assumes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Assumptions {
    /// Creates the account accepts per minute.
    pub creates_per_minute: u32,
    /// Generations the account allows at once.
    pub max_in_flight: u32,
    /// Typical seconds from create to completed for photon-1.
    pub latency_seconds_photon_1: f64,
    /// Typical seconds from create to completed for photon-flash-1.
    pub latency_seconds_photon_flash_1: f64,
}

impl Assumptions {
    fn latency(&self, model: Model) -> f64 {
        match model {
            Model::Photon1 => self.latency_seconds_photon_1,
            Model::PhotonFlash1 => self.latency_seconds_photon_flash_1,
        }
    }

    /// The floor the limits set: max(N / rate, N × latency / concurrency), in seconds.
    pub fn shortest_seconds(&self, images: &[(Model, u64)]) -> f64 {
        let n: u64 = images.iter().map(|(_, n)| n).sum();
        let by_rate = if self.creates_per_minute == 0 {
            0.0
        } else {
            n as f64 * 60.0 / f64::from(self.creates_per_minute)
        };
        let busy: f64 = images.iter().map(|(m, n)| *n as f64 * self.latency(*m)).sum();
        let by_concurrency = busy / f64::from(self.max_in_flight.max(1));
        by_rate.max(by_concurrency)
    }
}

/// Images and cost of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelLine {
    /// The model.
    pub model: Model,
    /// Images of it (tasks).
    pub images: u64,
    /// The price of one image.
    pub price: Money,
    /// `price` in micro-dollars.
    pub price_micros: i64,
    /// `price` × `images`.
    pub cost: Money,
    /// `cost` in micro-dollars.
    pub cost_micros: i64,
}

/// Every task as a preview, a fraction promoted to finals.
#[derive(Debug, Clone, Serialize)]
pub struct PromotePlan {
    /// The share of previews promoted, 0..=1.
    pub promote_fraction: f64,
    /// Previews: every task.
    pub previews: u64,
    /// What the previews cost, at the preview model's price.
    pub preview_cost: Money,
    /// Finals: `previews` × `promote_fraction`, rounded up.
    pub finals: u64,
    /// What the finals cost, at the final model's price.
    pub final_cost: Money,
    /// `preview_cost` + `final_cost`.
    pub total: Money,
    /// `total` in micro-dollars.
    pub total_micros: i64,
}

/// Whether a budget covers the job.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetCheck {
    /// The budget checked.
    pub budget: Money,
    /// `budget` in micro-dollars.
    pub budget_micros: i64,
    /// Whether the budget pays for every task of the pass.
    pub covers_job: bool,
    /// Tasks, in file order, the budget pays for.
    pub tasks_covered: u64,
}

/// The estimate, with stable names for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The pass estimated.
    pub pass: Pass,
    /// Valid rows, after prompt-variable expansion.
    pub rows: u64,
    /// Tasks (rows × variants).
    pub tasks: u64,
    /// Images and cost per model.
    pub by_model: Vec<ModelLine>,
    /// What the pass costs at the price table in force.
    pub total: Money,
    /// `total` in micro-dollars.
    pub total_micros: i64,
    /// The same images, all with photon-1.
    pub all_photon_1: Money,
    /// `all_photon_1` in micro-dollars.
    pub all_photon_1_micros: i64,
    /// The preview-then-promote plan for the same rows.
    pub preview_then_promote: PromotePlan,
    /// The shortest wall time the account's limits allow, in seconds.
    pub shortest_seconds: f64,
    /// The limits and latencies assumed.
    pub assumptions: Assumptions,
    /// Whether the budget (when one was given) covers the job.
    pub budget: Option<BudgetCheck>,
}

/// Accumulates tasks in file order.
#[derive(Debug, Clone)]
pub struct EstimateBuilder {
    prices: PriceTable,
    budget: Option<Money>,
    counts: [(Model, u64); 2],
    running: Money,
    covered: u64,
    rows: u64,
}

impl EstimateBuilder {
    /// Starts an estimate priced at `prices`, checked against `budget` when one is given.
    pub fn new(prices: PriceTable, budget: Option<Money>) -> Self {
        EstimateBuilder {
            prices,
            budget,
            counts: [(Model::Photon1, 0), (Model::PhotonFlash1, 0)],
            running: Money::ZERO,
            covered: 0,
            rows: 0,
        }
    }

    /// Adds a row's `count` tasks of `model`.
    pub fn add(&mut self, model: Model, count: u64) {
        self.rows += 1;
        let price = self.prices.price(model);
        if let Some(slot) = self.counts.iter_mut().find(|(m, _)| *m == model) {
            slot.1 += count;
        }
        if let Some(budget) = self.budget {
            let room = budget.micros().saturating_sub(self.running.micros());
            let fits = if price.micros() == 0 {
                count
            } else {
                u64::try_from(room / price.micros()).unwrap_or(0).min(count)
            };
            if self.covered == self.tasks() - count {
                // Still covering every task so far: cover what fits of this row.
                self.covered += fits;
            }
        }
        self.running += price.times(count);
    }

    fn tasks(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// The estimate of `pass` under `assumptions`, with `promote_fraction` (0..=1) of the previews promoted in the plan.
    pub fn finish(self, pass: Pass, assumptions: Assumptions, promote_fraction: f64) -> Estimate {
        let tasks = self.tasks();
        let by_model: Vec<ModelLine> = self
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(model, n)| {
                let price = self.prices.price(*model);
                let cost = price.times(*n);
                ModelLine {
                    model: *model,
                    images: *n,
                    price,
                    price_micros: price.micros(),
                    cost,
                    cost_micros: cost.micros(),
                }
            })
            .collect();
        let total: Money = by_model.iter().map(|l| l.cost).sum();
        let all_photon_1 = self.prices.photon_1.times(tasks);
        let fraction = promote_fraction.clamp(0.0, 1.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let finals = (tasks as f64 * fraction).ceil() as u64;
        let preview_cost = self.prices.photon_flash_1.times(tasks);
        let final_cost = self.prices.photon_1.times(finals);
        let plan_total = preview_cost + final_cost;
        let budget = self.budget.map(|budget| BudgetCheck {
            budget,
            budget_micros: budget.micros(),
            covers_job: total <= budget,
            tasks_covered: self.covered,
        });
        let images: Vec<(Model, u64)> = self.counts.to_vec();
        Estimate {
            pass,
            rows: self.rows,
            tasks,
            by_model,
            total,
            total_micros: total.micros(),
            all_photon_1,
            all_photon_1_micros: all_photon_1.micros(),
            preview_then_promote: PromotePlan {
                promote_fraction: fraction,
                previews: tasks,
                preview_cost,
                finals,
                final_cost,
                total: plan_total,
                total_micros: plan_total.micros(),
            },
            shortest_seconds: assumptions.shortest_seconds(&images),
            assumptions,
            budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assumptions() -> Assumptions {
        Assumptions {
            creates_per_minute: 80,
            max_in_flight: 40,
            latency_seconds_photon_1: 3.5,
            latency_seconds_photon_flash_1: 0.3,
        }
    }

    #[test]
    fn costs_add_up_exactly_per_model() {
        let mut b = EstimateBuilder::new(PriceTable::default(), None);
        b.add(Model::PhotonFlash1, 1000);
        b.add(Model::Photon1, 10);
        let e = b.finish(Pass::Preview, assumptions(), 0.25);
        assert_eq!(e.total, Money::from_micros(1000 * 4_000 + 10 * 15_000));
        assert_eq!(e.all_photon_1, Money::from_micros(1010 * 15_000));
        assert_eq!(e.preview_then_promote.finals, 253);
        assert_eq!(
            e.preview_then_promote.total,
            Money::from_micros(1010 * 4_000 + 253 * 15_000)
        );
    }

    #[test]
    fn the_floor_is_the_slower_of_rate_and_concurrency() {
        // 800 flash images at 80/min: 600 s by rate; 800 × 0.3 / 40 = 6 s by concurrency.
        assert_eq!(
            assumptions().shortest_seconds(&[(Model::PhotonFlash1, 800)]),
            600.0
        );
        let fast = Assumptions {
            creates_per_minute: 3000,
            ..assumptions()
        };
        // 1000 photon-1 images: 20 s by rate, 1000 × 3.5 / 40 = 87.5 s by concurrency.
        assert_eq!(fast.shortest_seconds(&[(Model::Photon1, 1000)]), 87.5);
    }

    #[test]
    fn a_budget_covers_tasks_in_file_order() {
        let mut b = EstimateBuilder::new(PriceTable::default(), Some(Money::parse_usd("0.05").unwrap()));
        b.add(Model::Photon1, 2); // 0.030
        b.add(Model::PhotonFlash1, 10); // 0.020 fits 5 of them
        b.add(Model::PhotonFlash1, 1);
        let e = b.finish(Pass::Preview, assumptions(), 0.25);
        let check = e.budget.unwrap();
        assert!(!check.covers_job);
        assert_eq!(check.tasks_covered, 7);
    }
}
