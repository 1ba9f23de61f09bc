//! Test support (feature `testkit`): what runner tests share instead of copying it.
//!
//! - [`FakeLlm`]: one scriptable in-process LLM (replies, errors, delays, panics,
//!   hangs; records requests and the peak of concurrent calls);
//! - [`TestClock`]: a settable, advanceable [`crate::Clock`];
//! - [`RunnerBuilder`]: store + metrics + LLM + clock + config overrides → [`crate::Runner`];
//! - [`metric_value`]: a metric's value parsed from the text exposition;
//! - [`http`]: wiremock helpers for tests that exercise HTTP (the HTTP LLM client,
//!   the research services).
//!
//! Rows (missions, agents, changes) and test databases come from
//! `mana_ai_store::testkit`: SQL stays in the store crate.

pub mod builder;
pub mod clock;
pub mod http;
pub mod llm;
pub mod metrics;

pub use builder::{test_config, RunnerBuilder};
pub use clock::TestClock;
pub use llm::{has_tool_result, user_prompt, FakeLlm, OnFirstCall, Reply};
pub use metrics::{metric_value, samples, Sample};
