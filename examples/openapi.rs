//! Prints the OpenAPI document `/openapi.json` serves; `make openapi` writes it to
//! `docs/openapi.json`, the committed copy the tests check for drift.

fn main() {
    print!("{}", ferrum_serve::api::openapi::spec_json());
}
