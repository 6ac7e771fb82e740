// Until `cortex status` calls it (the lead wires it in), nothing outside tests does.
#[allow(dead_code)]
mod status_table;

fn main() {}
