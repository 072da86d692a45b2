//! The configuration files operators write: the relay's and the agent's loaders turn any
//! text into a validated configuration or an error naming the problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = noc_app::Config::from_toml(text);
        let _ = noc_agent::AgentConfig::parse(text);
    }
});
