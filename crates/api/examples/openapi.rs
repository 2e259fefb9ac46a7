//! Print the OpenAPI document: `cargo run -p imagefactory-api --example openapi`.

fn main() {
    let doc = imagefactory_api::openapi();
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("serializable")
    );
}
