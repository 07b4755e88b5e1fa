//! Python actors: the actor bench (benches/src/actor_bench.rs) on the
//! Python worker golden (numpy imported before the snapshot). Run with
//! `./dev.sh bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::actor_bench::{self, Language};
use reflow_benches::kvm_available;
use reflow_integration_tests::warm_python_golden;
use reflow_integration_tests::warm_worker_golden;
use reflow_sandbox_core::Language as CoreLanguage;

/// The actor tests' region size, so both share one golden snapshot.
const SHM_MIB: u32 = 40;

const IDENTITY: &str = r#"
@actor(name="Identity", inports=["input"], outports=["output"])
def identity(context):
    context.send_output_sync("output", context.get_input("input"))
"#;

const ASYNC_IDENTITY: &str = r#"
@actor(name="AsyncIdentity", inports=["input"], outports=["output"])
async def identity(context):
    await context.send_output("output", context.get_input("input"))
"#;

fn python(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let lang = Language {
        language: CoreLanguage::Python,
        shm_mib: SHM_MIB,
        name: "python",
        golden: warm_python_golden(SHM_MIB, "run_worker.py", "worker.ready"),
        identity: ("id.actor.py", IDENTITY),
        big_golden: warm_worker_golden(CoreLanguage::Python, actor_bench::BIG_SHM_MIB),
        async_identity: ("async_id.actor.py", ASYNC_IDENTITY),
    };
    actor_bench::run(c, &lang);
}

criterion_group!(benches, python);
criterion_main!(benches);
