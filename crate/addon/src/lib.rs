//! The addon Node loads: nothing but the `h3node` crate, linked with LTO.
//!
//! Every napi export is defined in the `h3node` crate (`crate/src/lib.rs`);
//! this cdylib only links it. It exists because cargo performs no link-time
//! optimisation for a crate built as both a cdylib and an rlib
//! (rust-lang/rust#51009), and `h3node` is an rlib for the fuzz targets
//! (`fuzz/`). Built that way, quiche, octets, BoringSSL's wrappers and the
//! standard library were not inlined across crates: in a 1 GiB download the
//! I/O thread took 103-106 ticks of user time, against 88-97 with LTO, and
//! the download ran at 3.6-4.0 Gbit/s against 4.0-4.3 (benchmark/README.md,
//! "Link-time optimisation").

// Nothing here names an item of `h3node`, so without this the crate would not
// be linked at all; its napi registrations run from its own constructors.
extern crate h3node;
