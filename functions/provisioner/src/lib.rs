//! The provisioner as a Lambda function: the SQS event source's batches, each message settled by
//! the application's workers ([`shadowsync_app::worker::process`]).

mod batch;

pub use batch::SqsBatchHandler;
