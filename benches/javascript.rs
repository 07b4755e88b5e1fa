//! JavaScript actors: the actor bench (benches/src/actor_bench.rs) on the
//! Node worker golden (lodash required before the snapshot). Run with
//! `./dev.sh bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::actor_bench::{self, Language};
use reflow_benches::kvm_available;
use reflow_integration_tests::warm_node_golden;
use reflow_integration_tests::warm_worker_golden;
use reflow_sandbox_core::Language as CoreLanguage;

/// The actor tests' region size, so both share one golden snapshot.
const SHM_MIB: u32 = 40;

const IDENTITY: &str = r#"
const metadata = { name: "Identity", inports: ["input"], outports: ["output"] };
function process(context) {
  context.sendOutputSync("output", context.getInput("input"));
}
module.exports = { metadata, process };
"#;

const ASYNC_IDENTITY: &str = r#"
const metadata = { name: "AsyncIdentity", inports: ["input"], outports: ["output"] };
async function process(context) {
  await context.sendOutput("output", context.getInput("input"));
}
module.exports = { metadata, process };
"#;

fn javascript(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let lang = Language {
        language: CoreLanguage::JavaScript,
        shm_mib: SHM_MIB,
        name: "javascript",
        golden: warm_node_golden(SHM_MIB),
        identity: ("id.actor.js", IDENTITY),
        big_golden: warm_worker_golden(CoreLanguage::JavaScript, actor_bench::BIG_SHM_MIB),
        async_identity: ("async_id.actor.js", ASYNC_IDENTITY),
    };
    actor_bench::run(c, &lang);
}

criterion_group!(benches, javascript);
criterion_main!(benches);
