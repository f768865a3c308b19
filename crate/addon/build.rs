// The platform link arguments of a napi addon (on macOS, N-API resolved when
// Node loads the library) apply to the cdylib, so they are set here; crate/'s
// own build.rs sets what the napi macros there need.
fn main() {
    napi_build::setup();
}
