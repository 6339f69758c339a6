//! The store conformance suite against any S3 server: what `.ci/run` runs
//! against moto, a second implementation beside the s3s-fs of `cargo test`.
//!
//! ```sh
//! cargo run -p cairn-store-s3 --example conformance -- http://127.0.0.1:5055 cairn-ci
//! ```
//!
//! Credentials and region from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! and `AWS_REGION`. The bucket must exist and be empty below the prefixes
//! used (`conformance-<n>`). Exits non-zero on the first breach.

use cairn_store::{Namespace, ObjectName, Store};
use cairn_store_s3::{S3Config, S3Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(endpoint), Some(bucket)) = (args.next(), args.next()) else {
        eprintln!("usage: conformance ENDPOINT BUCKET");
        std::process::exit(2);
    };
    let var = |name: &str| std::env::var(name).ok();
    let config = |bucket: &str, prefix: &str| S3Config {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint: Some(endpoint.clone()),
        region: var("AWS_REGION").or_else(|| Some("us-east-1".into())),
        access_key_id: var("AWS_ACCESS_KEY_ID"),
        secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        session_token: None,
    };
    for prefix in ["conformance-1", "conformance-2/nested"] {
        // `create`: the prefix is empty, and the server refuses overwrites.
        let store = S3Store::create(&config(&bucket, prefix)).expect("store");
        cairn_store::conformance::run(&store);
        println!("conformance: {endpoint} {bucket}/{prefix}: passed");
    }
    // A bucket that is not there: an error, for every kind of request.
    let missing = S3Store::new(&config("cairn-no-such-bucket", "x")).expect("store");
    let name = ObjectName::new(Namespace::Config, "config").expect("name");
    assert!(
        missing.put(&name, b"x").is_err(),
        "put into a missing bucket"
    );
    assert!(
        missing.list(Namespace::Packs).is_err(),
        "list of a missing bucket"
    );
    assert!(missing.get(&name, 10).is_err(), "get from a missing bucket");
    println!("conformance: a missing bucket is an error: passed");
}
