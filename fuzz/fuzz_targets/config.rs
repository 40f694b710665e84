//! Fuzzes the gateway configuration (`sightline::config::Config`): arbitrary TOML text is
//! parsed over the defaults as `Config::load` parses a file, then validated.
//!
//! Checks: no panic; a config that validates has valid, unique stream ids; an error about a
//! stream whose URL carries a password does not quote that URL as it is (errors show URLs
//! through `redact_url`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline::config::{Config, valid_stream_id};

fuzz_target!(|text: &str| {
    let Ok(config) = Config::from_toml_str(text) else { return };
    match config.validate() {
        Ok(()) => {
            let mut ids: Vec<&str> = config.streams.iter().map(|s| s.id.as_str()).collect();
            assert!(ids.iter().all(|id| valid_stream_id(id)));
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), config.streams.len(), "duplicate stream ids accepted");
        }
        Err(e) => {
            for s in &config.streams {
                let Some(about) = e.strip_prefix(&format!("stream {}: ", s.id)) else { continue };
                let password = url::Url::parse(&s.url).ok().and_then(|u| u.password().map(str::to_owned));
                if password.is_some_and(|p| p != "***") {
                    assert!(!about.contains(&s.url), "{e:?} shows the password of {:?}", s.url);
                }
            }
        }
    }
});
