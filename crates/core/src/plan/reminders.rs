//! Transient reminders: short system notes appended after the history for one LLM call.
//!
//! Producers, evaluated in this order each round: `compacted` (info, every round after a
//! compaction), `token-budget` (warn at ≥ 75 % of the agent's daily cap, escalate at
//! ≥ 100 %, both inclusive), `retry-loop` (warn from round 3 when the last two tool calls
//! both failed — reachable here because the planner rejects calls).

use super::BudgetContext;
use crate::lang::Lang;
use crate::prompt::text;

/// How urgent a reminder is (the `severity` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReminderSeverity {
    Info,
    Warn,
    Escalate,
}

impl ReminderSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderSeverity::Info => "info",
            ReminderSeverity::Warn => "warn",
            ReminderSeverity::Escalate => "escalate",
        }
    }
}

/// One reminder for the next LLM call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub producer: &'static str,
    pub severity: ReminderSeverity,
    pub text: String,
}

/// Producer label of the compaction reminder.
pub const PRODUCER_COMPACTED: &str = "compacted";
/// Producer label of the budget reminder.
pub const PRODUCER_TOKEN_BUDGET: &str = "token-budget";
/// Producer label of the repeated-failure reminder.
pub const PRODUCER_RETRY_LOOP: &str = "retry-loop";

/// Fires on every round once a compaction happened.
pub fn compacted_reminder(compactions: u32, lang: Lang) -> Option<Reminder> {
    (compactions >= 1).then(|| Reminder {
        producer: PRODUCER_COMPACTED,
        severity: ReminderSeverity::Info,
        text: text::compacted_reminder(lang).to_string(),
    })
}

/// Keeps only characters that cannot form markup, so a user-chosen agent name cannot
/// close the `<reminder>` wrapper.
fn plain_name(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '<' | '>') && !c.is_control())
        .collect()
}

/// Budget reminder: `used = budget.used_before + run_tokens` against `budget.cap_tokens`.
/// No reminder for a zero cap (such agents are skipped before planning).
pub fn token_budget_reminder(
    budget: &BudgetContext,
    run_tokens: u64,
    lang: Lang,
) -> Option<Reminder> {
    if budget.cap_tokens == 0 {
        return None;
    }
    let total = budget.used_before.saturating_add(run_tokens);
    let pct = total as f64 / budget.cap_tokens as f64;
    if pct < 0.75 {
        return None;
    }
    let pct_display = (pct * 100.0).round() as u64;
    let name = plain_name(&budget.agent_name);
    let cap = budget.cap_tokens;
    Some(if pct >= 1.0 {
        Reminder {
            producer: PRODUCER_TOKEN_BUDGET,
            severity: ReminderSeverity::Escalate,
            text: text::budget_exhausted(lang, &name, total, cap, pct_display),
        }
    } else {
        Reminder {
            producer: PRODUCER_TOKEN_BUDGET,
            severity: ReminderSeverity::Warn,
            text: text::budget_warning(lang, &name, total, cap, pct_display),
        }
    })
}

/// From round 3 on: fires when the last two recorded tool calls both failed.
/// `recent_success` holds the success flags of all calls so far, oldest first.
pub fn retry_loop_reminder(round: u32, recent_success: &[bool], lang: Lang) -> Option<Reminder> {
    if round < 3 {
        return None;
    }
    match recent_success {
        [.., false, false] => Some(Reminder {
            producer: PRODUCER_RETRY_LOOP,
            severity: ReminderSeverity::Warn,
            text: text::retry_loop(lang).to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(cap: u64, used: u64) -> BudgetContext {
        BudgetContext {
            agent_name: "Mana<x>".into(),
            cap_tokens: cap,
            used_before: used,
        }
    }

    #[test]
    fn budget_thresholds_table() {
        let cases: &[(u64, u64, u64, Option<ReminderSeverity>)] = &[
            (1000, 0, 749, None),
            (1000, 0, 750, Some(ReminderSeverity::Warn)),
            (1000, 700, 50, Some(ReminderSeverity::Warn)),
            (1000, 0, 999, Some(ReminderSeverity::Warn)),
            (1000, 1000, 0, Some(ReminderSeverity::Escalate)),
            (1000, 600, 900, Some(ReminderSeverity::Escalate)),
            (0, 5, 5, None),
        ];
        for (cap, used, run, want) in cases {
            let got =
                token_budget_reminder(&budget(*cap, *used), *run, Lang::En).map(|r| r.severity);
            assert_eq!(got, *want, "cap {cap} used {used} run {run}");
        }
    }

    #[test]
    fn budget_texts() {
        let warn = token_budget_reminder(&budget(1000, 0), 755, Lang::En).unwrap();
        assert_eq!(warn.producer, "token-budget");
        assert!(
            warn.text.starts_with(
                "Agent Manax has used 76% of its daily token budget (755 / 1000 tokens)."
            ),
            "{}",
            warn.text
        );
        let esc = token_budget_reminder(&budget(1000, 1500), 0, Lang::En).unwrap();
        assert!(esc.text.contains("(1500 / 1000 tokens = 150%)"));
        assert!(esc.text.contains("NOW"));
    }

    #[test]
    fn retry_loop_table() {
        let cases: &[(u32, &[bool], bool)] = &[
            (2, &[false, false], false),
            (3, &[false, false], true),
            (3, &[true, false, false], true),
            (3, &[false, true], false),
            (3, &[false], false),
            (5, &[], false),
        ];
        for (round, flags, fires) in cases {
            assert_eq!(
                retry_loop_reminder(*round, flags, Lang::En).is_some(),
                *fires,
                "{round} {flags:?}"
            );
        }
    }

    #[test]
    fn compacted_only_after_compaction() {
        assert!(compacted_reminder(0, Lang::En).is_none());
        let r = compacted_reminder(1, Lang::En).unwrap();
        assert_eq!(
            (r.producer, r.severity),
            ("compacted", ReminderSeverity::Info)
        );
        assert!(r.text.contains("compact-summary"));
    }

    #[test]
    fn german_reminders() {
        let r = compacted_reminder(1, Lang::De).unwrap();
        assert!(r.text.contains("compact-summary") && r.text.contains("frag nicht"));
        let warn = token_budget_reminder(&budget(1000, 0), 755, Lang::De).unwrap();
        assert!(warn.text.contains("Manax") && warn.text.contains("76%"));
        assert!(warn.text.contains("Tagesbudget"));
        let esc = token_budget_reminder(&budget(1000, 1000), 0, Lang::De).unwrap();
        assert!(esc.text.contains("Tagesbudget") && esc.text.contains("aufgebraucht"));
        assert!(esc.text.contains("JETZT") && esc.text.contains("(1000 / 1000 Tokens = 100%)"));
        let retry = retry_loop_reminder(3, &[false, false], Lang::De).unwrap();
        assert!(retry.text.contains("fehlgeschlagen"));
    }
}
