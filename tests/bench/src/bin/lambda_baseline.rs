//! `shadowsync-lambda-baseline`: the bare Lambda function the benchmark compares the four
//! functions with: the `lambda_runtime` polling loop, echoing each event back, nothing else.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
