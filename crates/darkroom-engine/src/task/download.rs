//! The download step: the image downloaded (with a fresh URL when the old one expired), verified
//! and written atomically to the task's output path, then recorded done. A paid image is tried
//! again on `RetryPolicy::download` for `RetryPolicy::download_patience` before it is left to the
//! next run; answers that can never become an image make the generation unusable sooner.

use std::path::PathBuf;

use bytes::Bytes;
use darkroom_provider::GenerationState;

use super::{Step, TaskRun};
use crate::retry::{classify, Decision};
use crate::run_context::StopReason;
use crate::EngineError;
use crate::{images, qc};

/// Whole answers in a row that cannot become an image (a 404 even at a fresh URL, a body that is not
/// an image) after which a completed generation counts as unusable.
const UNUSABLE_AFTER: u32 = 4;

/// What the tries of one download have learnt so far.
struct Tries {
    /// The URL to try next (refreshed from the upstream when the last one refused).
    url: String,
    /// The last failure, for the log and the unusable reason.
    last_error: String,
    /// Refusals at the URL in a row (404 or another 4xx).
    missing: u32,
    /// Answers in a row that were not an image.
    undecodable: u32,
}

/// Where one try of a download leaves the task.
enum Tried {
    /// Try again after the schedule's next wait.
    Again,
    /// The step is over: go on with this.
    Next(Step),
}

impl TaskRun {
    /// Downloads, verifies and stores the generation's image, trying again while the policy
    /// allows; a task still without its image when patience runs out is left to the next run.
    pub(super) async fn download(
        &mut self,
        generation: i64,
        upstream_id: String,
        url: String,
    ) -> Result<Step, EngineError> {
        let shared = self.shared.clone();
        let _slot = shared.downloads.acquire().await;
        let policy = &shared.settings.retry;
        let mut tries = Tries {
            url,
            last_error: String::new(),
            missing: 0,
            undecodable: 0,
        };
        // The image is paid for: keep trying for a while (a CDN's URL stays valid for hours), with
        // growing pauses, before leaving it to the next run.
        let give_up_at = tokio::time::Instant::now() + policy.download_patience;
        let mut waits = policy.download.start();
        for try_number in 0u32.. {
            if try_number > 0 {
                if tokio::time::Instant::now() >= give_up_at {
                    break;
                }
                let delay = waits.next_delay().unwrap_or(policy.download.max);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.shared.abort.cancelled() => return Ok(Step::End),
                }
            }
            match self
                .try_download(generation, &upstream_id, try_number, &mut tries)
                .await?
            {
                Tried::Again => {}
                Tried::Next(step) => return Ok(step),
            }
        }
        tracing::warn!(task = self.key(), error = %tries.last_error, "download failed; the next run tries again");
        Ok(Step::End)
    }

    /// One try: fetch, verify, store.
    async fn try_download(
        &mut self,
        generation: i64,
        upstream_id: &str,
        try_number: u32,
        tries: &mut Tries,
    ) -> Result<Tried, EngineError> {
        let max_bytes = self.shared.settings.max_image_bytes;
        let bytes = match self.upstream.client.download(&tries.url, max_bytes).await {
            Ok(bytes) => bytes,
            Err(error) => {
                return self
                    .download_failed(generation, upstream_id, try_number, tries, &error)
                    .await
            }
        };
        let (format, aspect) = (self.format, self.aspect);
        let check = self.shared.settings.qc.enabled;
        let task = self.key().to_string();
        // Verification and the quality check's decode are CPU work: off the runtime's threads,
        // and no more at once than there are cores (`RunContext::decodes`).
        let decoding = self.shared.decodes.clone().acquire_owned().await;
        let verified = tokio::task::spawn_blocking(move || {
            let _decoding = decoding;
            images::verify(&bytes, format, aspect)?;
            let measured = check.then(|| qc::measure(&bytes)).and_then(|m| {
                m.map_err(
                    |e| tracing::warn!(task, error = %e, "the image's pixels do not decode; kept unchecked"),
                )
                .ok()
            });
            Ok((bytes, measured))
        })
        .await
        .unwrap_or_else(|e| Err(images::VerifyError::Undecodable(e.to_string())));
        match verified {
            Ok((bytes, measured)) => self
                .store(generation, upstream_id, bytes, measured)
                .await
                .map(Tried::Next),
            Err(error @ images::VerifyError::Undecodable(_)) => {
                tries.missing = 0;
                tries.undecodable += 1;
                tries.last_error = error.to_string();
                if tries.undecodable >= UNUSABLE_AFTER {
                    let reason = format!(
                        "completed, but its URL does not serve an image ({})",
                        tries.last_error
                    );
                    return self.unusable(generation, reason).await.map(Tried::Next);
                }
                Ok(Tried::Again)
            }
            // A whole image of the wrong kind: downloading again won't change it; a new create may
            // (within the attempt cap).
            Err(error) => self
                .unusable(generation, error.to_string())
                .await
                .map(Tried::Next),
        }
    }

    /// The URL did not give the image. A URL answering 404 (or another 4xx, as an expired signed
    /// URL does) may only have expired: a fresh one is asked for at once. One that can't be reached
    /// at all is asked about every `RetryPolicy::fresh_url_every` tries (a file restored long after
    /// its generation: its old URL's host may be gone).
    async fn download_failed(
        &mut self,
        generation: i64,
        upstream_id: &str,
        try_number: u32,
        tries: &mut Tries,
        error: &darkroom_provider::ProviderError,
    ) -> Result<Tried, EngineError> {
        tries.last_error = error.to_string();
        let refused = error.is_not_found() || matches!(classify(error), Decision::GiveUp { .. });
        if refused {
            tries.missing += 1;
        } else {
            tries.missing = 0;
            let every = self.shared.settings.retry.fresh_url_every.max(1);
            if try_number % every != every - 1 {
                return Ok(Tried::Again);
            }
        }
        // Ask the upstream for a fresh URL.
        match self.upstream.client.get(upstream_id).await {
            Ok(fresh) => match fresh.image_url() {
                Some(fresh_url) => tries.url = fresh_url.to_string(),
                None if fresh.state == GenerationState::Completed => {
                    let reason = crate::poller::without_image(&fresh);
                    return self.unusable(generation, reason).await.map(Tried::Next);
                }
                None => {}
            },
            // Restoring a lost file whose generation the upstream no longer has: make it again,
            // under the budget.
            Err(gone) if gone.is_not_found() && self.shared.ledger.is_restoring(self.task.id).await? => {
                self.shared.ledger.remake_lost(generation).await?;
                return Ok(Tried::Next(Step::Create(None)));
            }
            Err(_) => {}
        }
        if tries.missing >= UNUSABLE_AFTER {
            let reason = format!(
                "completed, but its image is not at its URL ({})",
                tries.last_error
            );
            return self.unusable(generation, reason).await.map(Tried::Next);
        }
        Ok(Tried::Again)
    }

    /// Writes the verified image (with darkroom's metadata, unless turned off) to the task's path
    /// and records the task done, with its quality check when it was measured.
    async fn store(
        &mut self,
        generation: i64,
        upstream_id: &str,
        bytes: Bytes,
        measured: Option<qc::Measured>,
    ) -> Result<Step, EngineError> {
        let path = self.output_path();
        let bytes = Vec::from(bytes);
        // The generation's own bytes, with darkroom's metadata inside (the pixels untouched): the
        // ledger records the hash of the file as written.
        let bytes = if self.shared.settings.metadata {
            let metadata = crate::metadata::for_task(
                &self.shared.ledger,
                &self.task,
                &self.shared.settings.job_name,
                self.upstream.client.name(),
                Some(upstream_id),
            )
            .await?;
            crate::metadata::stamp(bytes, Some(metadata), &self.task.task_key).await
        } else {
            bytes
        };
        // Bytes another task still records at this path are moved aside first.
        let content = match crate::content::put_image(&self.shared.ledger, self.task.id, &path, bytes).await {
            Ok(content) => content,
            Err(error @ EngineError::Output { .. }) => {
                // Disk trouble is systemic: stop the run; the task stays downloading and the
                // next run downloads it again while its URL is valid. Nothing paid is lost.
                self.shared.stop(StopReason::Failed(format!(
                    "{error}: {}",
                    std::error::Error::source(&error)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )));
                return Ok(Step::End);
            }
            Err(other) => return Err(other),
        };
        let path_text = path.display().to_string();
        match measured {
            Some(measured) => {
                let settings = &self.shared.settings.qc;
                let bytes = u64::try_from(content.bytes).unwrap_or(0);
                let check = qc::judge(&measured, self.aspect, bytes, settings);
                let own = qc::Checked {
                    task_id: self.task.id,
                    task_key: self.task.task_key.clone(),
                    variant: u32::try_from(self.task.variant).unwrap_or(0),
                    perceptual_hash: check.perceptual_hash.clone(),
                };
                self.shared
                    .ledger
                    .record_done_checked(
                        generation,
                        &path_text,
                        &content,
                        &check,
                        qc::duplicate_rule(own, settings),
                    )
                    .await?;
            }
            None => {
                self.shared
                    .ledger
                    .record_done(generation, &path_text, &content)
                    .await?;
            }
        }
        self.finished("done", Some(path_text), None).await;
        Ok(Step::End)
    }

    /// `PASS_DIR/TASK_KEY.EXT` (`outputs::image_path`).
    fn output_path(&self) -> PathBuf {
        crate::outputs::image_path(&self.shared.pass_dir, &self.task.task_key, self.format)
    }
}
