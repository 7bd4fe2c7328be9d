//! openraft's own conformance suite for storage, run against the file log
//! store and the state machine: the contract (log state, truncation,
//! purge, vote, applied state, snapshots) as openraft's authors test it.
//! About 8 s, nearly all of it the suite's own eight 1-second sleeps
//! (it waits for stores that purge in the background).

use seckill_replica::log_store::{LogStore, LogStoreConfig};
use seckill_replica::openraft::testing::{StoreBuilder, Suite};
use seckill_replica::openraft::StorageError;
use seckill_replica::state_machine::{RecordsState, StateMachine};
use seckill_replica::{NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<RecordsState>, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine<RecordsState>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(LogStoreConfig::new(dir.path().join("log"))).expect("log opens");
        let state = RecordsState::new(dir.path().join("snapshots")).expect("state dir");
        let sm = StateMachine::open(dir.path().join("state"), state).expect("state machine opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_stores_pass_openraft_s_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}
