//! The balance observer: learns what the account really charges per image, beside the scheduler.
//!
//! It reads the account's balance before the first create and again as charges are recorded, and
//! compares the drop with the ledger's own charges since then. Once the difference is outside the
//! balance's resolution, the observed price per model is the drop attributable to our charges ÷
//! their number. A higher price is applied at once (`Ledger::reprice`: later reservations and
//! charges use it, earlier ones are corrected up to it) and announced once; a lower one only
//! recorded (the table stays: conservative).
//!
//! Readings are taken holding the create lock alone, so no create is between "accepted upstream" and
//! "recorded in the ledger" while the balance is read. Spend by anyone else on the account in the
//! meantime is part of the drop and can only raise the observed price. With two models charged
//! since the first reading, the whole unexplained drop is attributed to each model in turn (the most
//! careful reading for each). A provider without a balance (the read fails) has no observed price.
//! Nor has a pass while another run on its account (another job of the ledger) has sent creates
//! since the first reading: the drop is then not its own to read. A refund the ledger learns of,
//! since the first reading, for a charge made before it (a killed run's failed generation) may
//! have been given before that reading or after it; the drop can't be attributed either way, so
//! that reading becomes the first one.
//! The provider-specific part (Luma's `/credits` in float cents and its resolution) is in
//! `darkroom-luma`.

use std::collections::HashMap;
use std::time::Duration;

use darkroom_jobs::{Model, Money, PriceBasis};
use darkroom_ledger::{BalanceReading, ModelCharges, PriceObservation};

use crate::events::Event;
use crate::run_context::RunContext;
use crate::EngineError;

mod per_megapixel;
mod probe;

/// The most charged images between two balance readings once the first few were read: readings
/// follow 1, 2, 4, 8, then every 16 images, so an account charging more than the table is seen
/// within the first image or so, and the balance is not read for every image of a long run.
pub const MAX_IMAGES_BETWEEN_READINGS: i64 = 16;

pub use probe::{probe_cost, probe_prices, Probe, ProbeError};

/// The first reading of a run: what later drops are measured from.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    reading: BalanceReading,
    /// Generations up to this row id were made before the reading.
    watermark: i64,
}

/// The balance's drop since the first reading, beside the ledger's charges (micro-dollars).
#[derive(Debug, Clone, Copy)]
struct BalanceDrop {
    /// First reading minus this one.
    dropped: i64,
    /// The drop the ledger's charges don't explain (negative when they explain more).
    unexplained: i64,
    /// Whether the difference is beyond the balance's resolution.
    differs: bool,
}

/// The observer's state for one run.
#[derive(Debug)]
pub(crate) struct Observer {
    baseline: Baseline,
    run_started_at: i64,
    /// The ledger's charges (micro-dollars) at the last reading: the next is due once they grow.
    charged_at_last: i64,
    /// The images charged at the last reading: the next is due after `images_due` more.
    images_at_last: i64,
    /// Charged images after which the next reading is due whatever the table says they cost: 1,
    /// doubling after each reading up to [`MAX_IMAGES_BETWEEN_READINGS`].
    images_due: i64,
    /// The price per megapixel applied to each model so far this run (fal), when it was raised.
    rates: HashMap<Model, Money>,
    /// The finest resolution the balance has shown so far, micro-dollars.
    resolution: i64,
    /// Models whose differing price was already announced this run.
    announced: HashMap<String, Money>,
}

/// Reads the balance through the provider's client: `None` if it has none (or it can't be read).
async fn read_balance(shared: &RunContext) -> Option<BalanceReading> {
    match shared.client.balance().await {
        Ok(Some(balance)) => Some(BalanceReading {
            at: darkroom_ledger::now_ms(),
            balance_micros: balance.reading_micros,
            resolution_micros: balance.resolution_micros,
        }),
        Ok(None) => None,
        Err(error) => {
            tracing::info!(%error, "the account's balance could not be read; no observed price");
            None
        }
    }
}

impl Observer {
    /// Takes the first reading (before the run's first create). `None` when the provider exposes
    /// no balance: the run then goes on the table's prices alone.
    pub(crate) async fn start(shared: &RunContext) -> Result<Option<Observer>, EngineError> {
        let _alone = shared.create_lock.write().await;
        let Some(reading) = read_balance(shared).await else {
            return Ok(None);
        };
        let watermark = shared.ledger.generation_watermark().await?;
        shared
            .ledger
            .record_balance(
                shared.client.base_url(),
                Some((shared.job_id, shared.settings.pass)),
                reading,
            )
            .await?;
        Ok(Some(Observer {
            baseline: Baseline { reading, watermark },
            run_started_at: reading.at,
            charged_at_last: 0,
            images_at_last: 0,
            images_due: 1,
            rates: HashMap::new(),
            resolution: reading.resolution_micros,
            announced: HashMap::new(),
        }))
    }

    /// Whether enough new charges were recorded since the last reading for another to say more:
    /// the ledger's charges grew by twice the balance's resolution, or `images_due` more images
    /// were charged (so a table far below the real price is caught within a few images, however
    /// little the ledger thinks they cost).
    async fn due(&self, shared: &RunContext) -> Result<bool, EngineError> {
        let (micros, images) = self.charged(shared).await?;
        Ok(micros - self.charged_at_last >= 2 * self.resolution
            || images - self.images_at_last >= self.images_due)
    }

    /// The ledger's charges since the first reading: micro-dollars and images.
    async fn charged(&self, shared: &RunContext) -> Result<(i64, i64), EngineError> {
        let charges = shared
            .ledger
            .charges_since(
                shared.job_id,
                shared.settings.pass,
                self.baseline.watermark,
                self.baseline.reading.at,
            )
            .await?;
        Ok(charges.iter().fold((0, 0), |(micros, images), c| {
            (micros + c.micros, images + c.images)
        }))
    }

    /// Compares `reading` with the first one, beside the ledger's `explained` charges (over
    /// `images` images) since it, and notes the reading (`read_at`). `None` while too little was
    /// spent to tell anything.
    fn compare(&mut self, reading: &BalanceReading, explained: i64, images: i64) -> Option<BalanceDrop> {
        self.read_at(explained, images);
        // No charge made before the first reading was refunded since (else the reading became the
        // first one): the whole drop is this pass's charges.
        let dropped = self.baseline.reading.balance_micros - reading.balance_micros;
        // The finest step either reading shows is the account's (a whole-cent value may be a
        // coincidence; a fraction of a cent is not).
        let resolution = self
            .baseline
            .reading
            .resolution_micros
            .min(reading.resolution_micros);
        self.resolution = resolution;
        let unexplained = dropped - explained;
        let differs = unexplained.abs() > resolution;
        (differs || explained > resolution).then_some(BalanceDrop {
            dropped,
            unexplained,
            differs,
        })
    }

    /// A reading was taken with `explained` micro-dollars over `images` images charged since the
    /// first: the next is due after twice as many images as this one was (up to the cap).
    fn read_at(&mut self, explained: i64, images: i64) {
        self.charged_at_last = explained;
        self.images_at_last = images;
        self.images_due = (self.images_due * 2).min(MAX_IMAGES_BETWEEN_READINGS);
    }

    /// The balance, and the ledger's charges since the first reading; the caller holds the create
    /// lock alone, so no create is between "accepted upstream" and "recorded". `None` when there is
    /// nothing to compare: a create's outcome is still unknown, the balance can't be read, or a
    /// charge made before the first reading was refunded since (this reading then becomes the
    /// first one).
    async fn read_under_lock(
        &mut self,
        shared: &RunContext,
    ) -> Result<Option<(BalanceReading, Vec<ModelCharges>)>, EngineError> {
        let (job_id, pass) = (shared.job_id, shared.settings.pass);
        // A create whose outcome is unknown may be charged upstream and not yet here: wait
        // until reconciliation settles it rather than read its charge as a higher price.
        if shared.ledger.unsettled_creates(job_id, pass).await? > 0 {
            return Ok(None);
        }
        // Another run on the account spent since the first reading: the balance's drop is not this
        // pass's alone, and no reading says what this pass's images cost.
        if let Some(account) = &shared.account {
            let account_id = account.holder.account_id;
            let watermark = self.baseline.watermark;
            if shared
                .ledger
                .others_on_account_since(account_id, job_id, pass, watermark)
                .await?
            {
                return Ok(None);
            }
        }
        let Some(reading) = read_balance(shared).await else {
            return Ok(None);
        };
        let charges = shared
            .ledger
            .charges_since(job_id, pass, self.baseline.watermark, self.baseline.reading.at)
            .await?;
        let refunds = shared
            .ledger
            .refunds_before(job_id, pass, self.baseline.watermark, self.baseline.reading.at)
            .await?;
        if refunds > Money::ZERO {
            // A charge made before the first reading was refunded since, as the ledger learned:
            // the upstream may have given the money back before that reading or after it, so
            // this drop can't be attributed. This reading becomes the first one instead (taken
            // under the same lock, so no create is between it and its watermark).
            self.baseline = Baseline {
                reading,
                watermark: shared.ledger.generation_watermark().await?,
            };
            self.charged_at_last = 0;
            self.images_at_last = 0;
            return Ok(None);
        }
        Ok(Some((reading, charges)))
    }

    /// Reads the balance again and compares: records the observation, applies a higher price.
    /// The create lock is held alone throughout, so a raised price is in force (and every waiting
    /// reservation re-checked against it, `Ledger::cover_reservation`) before the next create.
    pub(crate) async fn observe(&mut self, shared: &RunContext) -> Result<(), EngineError> {
        let (job_id, pass) = (shared.job_id, shared.settings.pass);
        let _alone = shared.create_lock.write().await;
        let Some((reading, charges)) = self.read_under_lock(shared).await? else {
            return Ok(());
        };
        if shared.settings.prices.basis == PriceBasis::PerMegapixel {
            return self.observe_per_megapixel(shared, reading).await;
        }
        let base_url = shared.client.base_url().to_string();
        shared
            .ledger
            .record_balance(&base_url, Some((job_id, pass)), reading)
            .await?;
        let explained: i64 = charges.iter().map(|c| c.micros).sum();
        let Some(BalanceDrop {
            dropped,
            unexplained,
            differs,
        }) = self.compare(&reading, explained, charges.iter().map(|c| c.images).sum())
        else {
            return Ok(()); // too little spent yet to tell anything
        };
        for model_charges in &charges {
            let Some(model) = Model::parse(&model_charges.model) else {
                continue;
            };
            let images = model_charges.images;
            if images <= 0 {
                continue;
            }
            let table = shared.settings.prices.price(model);
            let in_force = Money::from_micros(model_charges.micros / images);
            let observed = if differs {
                // The whole unexplained drop is this model's: the most careful reading.
                let attributed = (dropped - (explained - model_charges.micros)).max(0);
                Money::from_micros((attributed + images - 1) / images)
            } else {
                in_force
            };
            shared
                .ledger
                .record_observation(&PriceObservation {
                    base_url: base_url.clone(),
                    job_id: Some(job_id),
                    pass: Some(pass.as_str().to_string()),
                    run_started_at: self.run_started_at,
                    model: model.as_str().to_string(),
                    table_micros: table.micros(),
                    observed_micros: observed.micros(),
                    images,
                    drop_micros: model_charges.micros + unexplained,
                    observed_at: reading.at,
                    per: per_unit(shared.settings.prices.basis).to_string(),
                })
                .await?;
            if differs && observed > in_force && observed > table {
                let repriced = shared
                    .ledger
                    .reprice(job_id, pass, model.as_str(), observed)
                    .await?;
                shared.repriced.store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(model = model.as_str(), %observed, %table, ?repriced, "re-priced to the observed price");
                self.announce(shared, model, table, observed, true).await;
            } else if differs && observed < table {
                self.announce(shared, model, table, observed, false).await;
            }
        }
        Ok(())
    }

    /// Emits the observed price once per model and run.
    async fn announce(
        &mut self,
        shared: &RunContext,
        model: Model,
        table: Money,
        observed: Money,
        applied: bool,
    ) {
        let key = model.as_str().to_string();
        if self.announced.contains_key(&key) {
            return;
        }
        self.announced.insert(key, observed);
        let basis = shared.settings.prices.basis;
        shared
            .emit(Event::PriceObserved {
                model: model.as_str().to_string(),
                table,
                observed,
                applied,
                per: per_unit(basis).to_string(),
                config_line: config_line(shared.client.name(), model, observed),
            })
            .await;
    }
}

/// What a price table's amounts are the price of, in words: `image` or `megapixel`.
pub fn per_unit(basis: PriceBasis) -> &'static str {
    match basis {
        PriceBasis::PerImage => "image",
        PriceBasis::PerMegapixel => "megapixel",
    }
}

/// The configuration section holding the price table of `provider` (`luma`, `replicate`, `fal`):
/// `[prices]` (Luma, per image), `[replicate.prices]` (per image), `[fal.prices]` (per megapixel).
pub fn prices_section(provider: &str) -> &'static str {
    match provider {
        "fal" => "[fal.prices]",
        "replicate" => "[replicate.prices]",
        _ => "[prices]",
    }
}

/// The line of `provider`'s price table (`prices_section`) that would make it say what the account
/// charges: `price` in that table's unit (per image, or per megapixel for fal).
pub fn config_line(provider: &str, model: Model, price: Money) -> String {
    format!(
        "{} \"{}\" = \"{}\"",
        prices_section(provider),
        model.as_str(),
        price.to_decimal_string()
    )
}

/// Runs beside the scheduler until `stop`: a reading whenever the ledger's charges since the last
/// one are worth more than the balance's resolution twice over, checked on each recorded charge and
/// at least every `every`.
pub(crate) async fn watch(
    shared: std::sync::Arc<RunContext>,
    mut observer: Observer,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Observer {
    loop {
        tokio::select! {
            () = shared.charged.notified() => {}
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return observer,
        }
        let due = match observer.due(&shared).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "the ledger could not be read for a price observation");
                continue;
            }
        };
        if due {
            if let Err(error) = observer.observe(&shared).await {
                tracing::warn!(%error, "recording a price observation failed");
            }
        }
    }
}
