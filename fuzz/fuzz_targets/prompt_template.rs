//! Any text as a prompt template: it parses or errs, and a small expansion yields exactly `count()`.
#![no_main]

use darkroom_jobs::variables::Template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|prompt: &str| {
    if let Ok(template) = Template::parse(prompt) {
        let count = template.count();
        if count <= 256 {
            assert_eq!(template.expand().count() as u64, count);
        }
    }
});
