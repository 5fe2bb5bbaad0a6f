//! The check's `retry-objects` (contract 0.2): a step that ended `partial` is executed again
//! for exactly its failed objects, in chunks as the server sends them, and must record one
//! result for each name it was given and none for any other. The seed has not changed, so
//! the objects usually fail again; what is checked is that the handler can be asked.

use super::{CheckReport, Lifecycle, PartialStep, RunWorld, flatten};
use crate::engine::RETRY_CHUNK;
use crate::model::{ObjectStatus, StepOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

impl Lifecycle<'_> {
    pub(super) fn retry_failed(
        &self,
        world: &RunWorld,
        partial: &PartialStep,
        report: &mut CheckReport,
    ) {
        let started = Instant::now();
        let result = self.rerun(world, partial);
        report.record(
            format!("retry failed objects of {}", partial.step.id),
            started.elapsed(),
            result,
        );
    }

    fn rerun(&self, world: &RunWorld, partial: &PartialStep) -> Result<String, String> {
        world.events.start_step();
        let before = world.events.object_count();
        let (mut summaries, mut still_partial) = (vec![], false);
        for chunk in partial.failed.chunks(RETRY_CHUNK) {
            let ctx = world.context(self.plugin, self.setup, None, self.timeout);
            let done = flatten(
                self.plugin
                    .execute(&ctx, self.spec, &partial.step, Some(chunk)),
            )?;
            world.events.commit();
            still_partial |= done.outcome == StepOutcome::Partial;
            summaries.push(done.summary);
        }
        let results = world.events.objects().split_off(before);
        let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &results {
            *per_name.entry(r.name.as_str()).or_default() += 1;
        }
        let asked: BTreeSet<&str> = partial.failed.iter().map(String::as_str).collect();
        if let Some(other) = per_name.keys().find(|n| !asked.contains(*n)) {
            return Err(format!(
                "the retry recorded a result for {other:?}, which it was not asked to re-run"
            ));
        }
        if let Some(missing) = asked.iter().find(|n| !per_name.contains_key(*n)) {
            return Err(format!("the retry recorded no result for {missing:?}"));
        }
        if let Some((name, n)) = per_name.iter().find(|(_, n)| **n > 1) {
            return Err(format!(
                "the retry recorded {n} results for {name:?}: one per object"
            ));
        }
        let still_failed = results
            .iter()
            .filter(|r| r.status == ObjectStatus::Error)
            .count();
        Ok(format!(
            "re-ran the {} failed objects, one result each ({still_failed} still failed{}): {}",
            asked.len(),
            if still_partial { ", partial" } else { "" },
            summaries.join("; ")
        ))
    }
}
