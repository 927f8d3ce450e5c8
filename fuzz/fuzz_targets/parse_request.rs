//! Request parsing and validation (`ferrum_serve::input`) against a fixed feature list:
//! any bytes give a parsed request or an error, never a panic; a parsed request holds a full
//! matrix of finite values in feature order, within the row limit; every error is a 4xx.
#![no_main]

use ferrum_serve::input::{parse_for_features, RequestInput};
use libfuzzer_sys::fuzz_target;

const FEATURES: [&str; 4] = ["age", "bmi", "bp", "s1"];
const MAX_ROWS: usize = 8;

fuzz_target!(|body: &[u8]| {
    let names: Vec<String> = FEATURES.iter().map(|s| s.to_string()).collect();
    match parse_for_features(body, &names, MAX_ROWS) {
        Ok(request) => match request.input {
            RequestInput::Rows(rows) => {
                assert_eq!(rows.n_cols, FEATURES.len());
                assert!(rows.n_rows >= 1 && rows.n_rows <= MAX_ROWS);
                assert_eq!(rows.data.len(), rows.n_rows * rows.n_cols);
                assert!(rows.data.iter().all(|v| v.is_finite()));
            }
            RequestInput::EntityIds(ids) => {
                assert!(!ids.is_empty() && ids.len() <= MAX_ROWS);
            }
        },
        Err(error) => {
            assert!(error.status().is_client_error(), "{error:?}");
            assert!(!error.to_string().is_empty());
        }
    }
});
