//! placeholder until live mode lands
fn main() {}
