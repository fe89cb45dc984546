use crate::{MemoryLog, contract};

#[tokio::test]
async fn the_memory_log_keeps_the_contract() {
    contract::run_all(MemoryLog::new).await;
}
