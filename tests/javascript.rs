//! JavaScript actors in a real VM: the actor suite (tests/src/actor_suite.rs,
//! run for Python by actors.rs) with the JavaScript scripts, on clones of
//! a golden snapshot taken with the Node worker running.

use reflow_integration_tests::actor_suite;
use reflow_integration_tests::javascript_scripts::JAVASCRIPT;

#[test]
fn javascript_actors_load_run_stream_keep_state_and_fail_cleanly() {
    actor_suite::actors_load_run_stream_keep_state_and_fail_cleanly(&JAVASCRIPT);
}

#[test]
fn javascript_clones_draw_different_random_numbers() {
    actor_suite::clones_draw_different_random_numbers(&JAVASCRIPT);
}

#[test]
fn javascript_state_operations_reach_the_embedded_store_and_redis() {
    actor_suite::state_operations_reach_the_embedded_store_and_redis(&JAVASCRIPT);
}
