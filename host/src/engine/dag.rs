//! The plan's steps as a DAG through `depends-on`: validation (unknown dependencies, cycles,
//! duplicate ids) and the orders the executor and rollback use. Pure, unit-tested.

use crate::model::Plan;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the plan has no steps")]
    Empty,
    #[error("step id '{0}' appears more than once")]
    DuplicateStep(String),
    #[error("step '{step}' depends on '{missing}', which is not in the plan")]
    UnknownDependency { step: String, missing: String },
    #[error("steps form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Check the plan and return its steps (by index) in a dependency order: every step after all
/// the steps it depends on, ties broken by plan order.
pub fn topological_order(plan: &Plan) -> Result<Vec<usize>, PlanError> {
    if plan.steps.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut index = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if index.insert(s.id.as_str(), i).is_some() {
            return Err(PlanError::DuplicateStep(s.id.clone()));
        }
    }
    let mut deps: Vec<BTreeSet<usize>> = Vec::with_capacity(plan.steps.len());
    for s in &plan.steps {
        let mut d = BTreeSet::new();
        for dep in &s.depends_on {
            let &j = index
                .get(dep.as_str())
                .ok_or_else(|| PlanError::UnknownDependency {
                    step: s.id.clone(),
                    missing: dep.clone(),
                })?;
            d.insert(j);
        }
        deps.push(d);
    }
    let mut done = vec![false; plan.steps.len()];
    let mut order = Vec::with_capacity(plan.steps.len());
    while order.len() < plan.steps.len() {
        let next = (0..plan.steps.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => return Err(PlanError::Cycle(find_cycle(plan, &deps, &done))),
        }
    }
    Ok(order)
}

/// Name one cycle among the steps not yet ordered, for the error message.
fn find_cycle(plan: &Plan, deps: &[BTreeSet<usize>], done: &[bool]) -> Vec<String> {
    let start = (0..deps.len())
        .find(|&i| !done[i])
        .expect("a cycle leaves steps unordered");
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = *deps[current]
            .iter()
            .find(|&&d| !done[d])
            .expect("an unordered step has an unordered dependency");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<String> = path[pos..]
                .iter()
                .map(|&i| plan.steps[i].id.clone())
                .collect();
            cycle.push(plan.steps[next].id.clone());
            return cycle;
        }
        path.push(next);
        current = next;
    }
}

/// Indexes of steps that may start now: not started, and every dependency completed.
pub fn ready_steps(
    plan: &Plan,
    is_done: impl Fn(usize) -> bool,
    is_startable: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    (0..plan.steps.len())
        .filter(|&i| is_startable(i))
        .filter(|&i| {
            plan.steps[i]
                .depends_on
                .iter()
                .all(|d| index.get(d.as_str()).is_some_and(|&j| is_done(j)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PlanStep, RiskLevel, StepKind};

    fn plan(steps: &[(&str, &[&str])]) -> Plan {
        Plan {
            steps: steps
                .iter()
                .map(|(id, deps)| PlanStep {
                    id: id.to_string(),
                    kind: StepKind::Migration,
                    description: String::new(),
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    expected_objects: None,
                    reversible: true,
                    resumable: true,
                    queue: None,
                    estimated_duration_ms: None,
                })
                .collect(),
            risk: RiskLevel::Low,
            risk_notes: vec![],
            estimated_duration_ms: None,
        }
    }

    fn ids(p: &Plan, order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| p.steps[i].id.clone()).collect()
    }

    #[test]
    fn orders_dependencies_first_and_keeps_plan_order_otherwise() {
        let p = plan(&[
            ("verify", &["copy"]),
            ("backup", &[]),
            ("copy", &["backup"]),
            ("notes", &[]),
        ]);
        assert_eq!(
            ids(&p, &topological_order(&p).unwrap()),
            ["backup", "copy", "verify", "notes"]
        );
    }

    #[test]
    fn rejects_unknown_dependencies() {
        let p = plan(&[("a", &["ghost"])]);
        assert_eq!(
            topological_order(&p).unwrap_err(),
            PlanError::UnknownDependency {
                step: "a".into(),
                missing: "ghost".into()
            }
        );
    }

    #[test]
    fn estimates_add_up_and_a_queue_step_is_ordered_like_any_other() {
        let mut p = plan(&[("a", &[]), ("b", &["a"])]);
        assert_eq!(p.estimate_ms(), None, "no step has an estimate");
        p.steps[0].estimated_duration_ms = Some(30);
        assert_eq!(p.estimate_ms(), None, "one step has none");
        p.steps[1].estimated_duration_ms = Some(12);
        assert_eq!(p.estimate_ms(), Some(42));
        p.estimated_duration_ms = Some(50);
        assert_eq!(p.estimate_ms(), Some(50), "the plan's own estimate wins");
        p.steps[1].queue = Some("reindex".into());
        assert_eq!(topological_order(&p), Ok(vec![0, 1]));
    }

    #[test]
    fn rejects_cycles_and_names_them() {
        let p = plan(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        match topological_order(&p).unwrap_err() {
            PlanError::Cycle(c) => {
                assert_eq!(c.first(), c.last());
                assert_eq!(c.len(), 4, "{c:?}");
                for s in ["a", "b", "c"] {
                    assert!(c.contains(&s.to_string()));
                }
            }
            other => panic!("{other:?}"),
        }
        let selfloop = plan(&[("a", &["a"])]);
        assert_eq!(
            topological_order(&selfloop).unwrap_err(),
            PlanError::Cycle(vec!["a".into(), "a".into()])
        );
    }

    #[test]
    fn rejects_duplicates_and_empty_plans() {
        assert_eq!(topological_order(&plan(&[])).unwrap_err(), PlanError::Empty);
        assert_eq!(
            topological_order(&plan(&[("a", &[]), ("a", &[])])).unwrap_err(),
            PlanError::DuplicateStep("a".into())
        );
    }

    #[test]
    fn parallel_branches_are_ready_together() {
        //      prep
        //     /    \
        //  left    right
        //     \    /
        //      join
        let p = plan(&[
            ("prep", &[]),
            ("left", &["prep"]),
            ("right", &["prep"]),
            ("join", &["left", "right"]),
        ]);
        let none_done = ready_steps(&p, |_| false, |_| true);
        assert_eq!(ids(&p, &none_done), ["prep"]);
        let after_prep = ready_steps(&p, |i| i == 0, |i| i != 0);
        assert_eq!(ids(&p, &after_prep), ["left", "right"]);
        let after_left = ready_steps(&p, |i| i <= 1, |i| i >= 2);
        assert_eq!(
            ids(&p, &after_left),
            ["right"],
            "join waits for both branches"
        );
        let all = ready_steps(&p, |i| i <= 2, |i| i == 3);
        assert_eq!(ids(&p, &all), ["join"]);
    }
}
