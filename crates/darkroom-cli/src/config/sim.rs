//! The built-in simulator's settings for `--sim`: where its account is kept beside the ledger, and
//! the prices it bills at.

use darkroom_jobs::Money;

use super::env;
use crate::exit::{Exit, Failure};

/// Where `--sim` keeps its simulated account: `.darkroom/sim/` in the ledger's directory, so every
/// command on that ledger talks to one account (its image URLs resolve, its bill accumulates).
pub fn sim_state_dir(db: &std::path::Path) -> std::path::PathBuf {
    let state = std::path::Path::new(".darkroom").join("sim");
    match db.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join(state),
        None => state,
    }
}

/// The built-in simulator's account for `--sim` on the ledger `db`, kept in `sim_state_dir(db)`:
/// the published prices unless `DARKROOM_SIM_PRICE_PHOTON_1` / `DARKROOM_SIM_PRICE_PHOTON_FLASH_1`
/// say otherwise (USD).
pub fn sim_config(db: &std::path::Path) -> anyhow::Result<darkroom_sim::SimConfig> {
    let mut config = darkroom_sim::SimConfig {
        state_dir: Some(sim_state_dir(db)),
        distinct_pictures: true,
        ..darkroom_sim::SimConfig::default()
    };
    for (variable, slot) in [
        (env::SIM_PRICE_PHOTON_1, &mut config.price_photon_1_micros),
        (
            env::SIM_PRICE_PHOTON_FLASH_1,
            &mut config.price_photon_flash_1_micros,
        ),
    ] {
        if let Ok(value) = std::env::var(variable) {
            let price = Money::parse_usd(&value)
                .map_err(|e| Failure::new(Exit::BadInput, format!("{variable}: {e}")))?;
            *slot = price.micros();
        }
    }
    Ok(config)
}
