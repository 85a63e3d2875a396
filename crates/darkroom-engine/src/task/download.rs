//! The download step: the image downloaded (with a fresh URL when the old one expired), verified
//! and written atomically to the task's output path, then recorded done. A paid image is retried
//! for a while before it is left to the next run.

use std::path::PathBuf;
use std::time::Duration;

use darkroom_luma::GenerationState;

use super::{Step, TaskRun};
use crate::images;
use crate::run_context::StopReason;
use crate::EngineError;

/// How long a paid image's download is retried before the task is left for the next run.
const DOWNLOAD_PATIENCE: Duration = Duration::from_secs(600);
/// Whole answers in a row that cannot become an image (a 404 even at a fresh URL, a body that is not
/// an image) after which a completed generation counts as unusable.
const UNUSABLE_AFTER: u32 = 4;

impl TaskRun {
    pub(super) async fn download(
        &mut self,
        generation: i64,
        upstream_id: String,
        mut url: String,
    ) -> Result<Step, EngineError> {
        let shared = self.shared.clone();
        let _slot = shared.downloads.acquire().await;
        let mut last_error = String::new();
        // Whole answers that cannot become an image, in a row: after a few, the generation is
        // unusable (a failed attempt), not something to wait out.
        let (mut missing, mut undecodable) = (0u32, 0u32);
        // The image is paid for: keep trying for a while (a CDN's URL stays valid for hours), with
        // growing pauses, before leaving it to the next run.
        let give_up_at = tokio::time::Instant::now() + DOWNLOAD_PATIENCE;
        for try_number in 0u32.. {
            if try_number > 0 {
                if tokio::time::Instant::now() >= give_up_at {
                    break;
                }
                let delay =
                    (Duration::from_millis(300) * 2u32.pow(try_number.min(7))).min(Duration::from_secs(30));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.shared.abort.cancelled() => return Ok(Step::End),
                }
            }
            let bytes = match self
                .shared
                .client
                .download(&url, self.shared.settings.max_image_bytes)
                .await
            {
                Ok(bytes) => bytes,
                Err(error) => {
                    last_error = error.to_string();
                    // A URL answering 404 (or another 4xx, as an expired signed URL does) may only
                    // have expired; one that can't be reached at all is asked about now and then too
                    // (a file restored long after its generation: its old URL's host may be gone).
                    let refused = error.is_not_found()
                        || matches!(error.class(), darkroom_luma::ErrorClass::Permanent { .. });
                    if refused {
                        missing += 1;
                    } else {
                        missing = 0;
                        if try_number % 4 != 3 {
                            continue;
                        }
                    }
                    // Ask the upstream for a fresh URL.
                    match self.shared.client.get(&upstream_id).await {
                        Ok(fresh) => match fresh.image_url() {
                            Some(fresh_url) => url = fresh_url.to_string(),
                            None if fresh.state == GenerationState::Completed => {
                                return self
                                    .unusable(generation, crate::poller::COMPLETED_WITHOUT_IMAGE.into())
                                    .await;
                            }
                            None => {}
                        },
                        // Restoring a lost file whose generation the upstream no longer has:
                        // make it again, under the budget.
                        Err(gone)
                            if gone.is_not_found()
                                && self.shared.ledger.is_restoring(self.task.id).await? =>
                        {
                            self.shared.ledger.remake_lost(generation).await?;
                            return Ok(Step::Create(None));
                        }
                        Err(_) => {}
                    }
                    if missing >= UNUSABLE_AFTER {
                        let reason = format!("completed, but its image is not at its URL ({last_error})");
                        return self.unusable(generation, reason).await;
                    }
                    continue;
                }
            };
            let (format, aspect) = (self.format, self.aspect);
            let verified =
                tokio::task::spawn_blocking(move || images::verify(&bytes, format, aspect).map(|_| bytes))
                    .await
                    .unwrap_or_else(|e| Err(images::VerifyError::Undecodable(e.to_string())));
            let bytes = match verified {
                Ok(bytes) => bytes,
                Err(error @ images::VerifyError::Undecodable(_)) => {
                    missing = 0;
                    undecodable += 1;
                    last_error = error.to_string();
                    if undecodable >= UNUSABLE_AFTER {
                        let reason = format!("completed, but its URL does not serve an image ({last_error})");
                        return self.unusable(generation, reason).await;
                    }
                    continue;
                }
                Err(error) => {
                    // A whole image of the wrong kind: downloading again won't change it; a new
                    // create may (within the attempt cap).
                    return self.unusable(generation, error.to_string()).await;
                }
            };
            let path = self.output_path();
            // Bytes another task still records at this path are moved aside first.
            let content =
                match crate::content::put_image(&self.shared.ledger, self.task.id, &path, Vec::from(bytes))
                    .await
                {
                    Ok(content) => content,
                    Err(error @ EngineError::Output { .. }) => {
                        // Disk trouble is systemic: stop the run; the task stays downloading and the next run
                        // downloads it again while its URL is valid. Nothing paid is lost.
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
            self.shared
                .ledger
                .record_done(generation, &path_text, &content)
                .await?;
            self.finished("done", Some(path_text), None).await;
            return Ok(Step::End);
        }
        tracing::warn!(task = self.key(), error = %last_error, "download failed; the next run tries again");
        Ok(Step::End)
    }

    fn output_path(&self) -> PathBuf {
        crate::outputs::image_path(&self.shared.pass_dir, &self.task.task_key, self.format)
    }
}
