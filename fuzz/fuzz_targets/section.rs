#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| h3node_fuzz::section(data));
