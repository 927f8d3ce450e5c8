//! `--model-name` (KServe's `{{.Name}}`, the InferenceService's name), on the real binary: a
//! repository of one model serves it under that name (V2 metadata, infer and `/predict` with
//! the training log's values; the model's own name is then unknown), a repository of several
//! serves as before when one of them has that name, and stops the start with the models named
//! when none has.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{run_to_exit, server_command, training_log, RepoCopy, Server};

impl RepoCopy {
    /// The arguments that serve this copy, then `extra`.
    fn args_with<'a>(
        &'a self,
        models: &'a str,
        manifest: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut args = vec![
            "--models-dir",
            models,
            "--manifest",
            manifest,
            "--warmup-runs",
            "1",
        ];
        args.extend_from_slice(extra);
        args
    }

    /// Keeps only `model` in the manifest.
    fn keep_only(&self, model: &str) {
        let mut manifest = self.manifest();
        manifest["models"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["name"] == model);
        manifest["default_model"] = json!(model);
        self.write_manifest(&manifest);
    }
}

#[tokio::test]
async fn a_repository_of_one_model_is_served_under_the_model_name() {
    let repo = RepoCopy::new();
    repo.keep_only("diabetes");
    let (models, manifest) = (repo.models(), repo.manifest_path());
    let (models, manifest) = (models.to_str().unwrap(), manifest.to_str().unwrap());
    let server =
        Server::start_ready(&repo.args_with(models, manifest, &["--model-name", "my-isvc"])).await;

    let (status, metadata) = server.get("/v2/models/my-isvc").await;
    assert_eq!(
        (status, &metadata["name"], &metadata["versions"]),
        (200, &json!("my-isvc"), &json!(["1"]))
    );
    let (status, _) = server.get("/v2/models/diabetes").await;
    assert_eq!(status, 404);
    let row = &training_log("diabetes")[0];
    for path in ["/predict", "/models/my-isvc/predict"] {
        let (status, body) = server
            .post(path, &json!({"instances": [row["features"]]}))
            .await;
        assert_eq!(
            (status, &body["predictions"][0]),
            (200, &row["prediction"]),
            "{path}: {body}"
        );
        assert_eq!(body["model"]["name"], "my-isvc", "{path}: {body}");
    }
    let (_, served) = server.get("/manifest").await;
    assert_eq!(
        (&served["default_model"], &served["models"][0]["name"]),
        (&json!("my-isvc"), &json!("my-isvc"))
    );
    let (status, body) = server.get("/v2/models/my-isvc/ready").await;
    assert_eq!((status, &body["ready"]), (200, &Value::Bool(true)));
}

#[tokio::test]
async fn a_repository_of_several_models_needs_one_of_that_name() {
    let repo = RepoCopy::new();
    let (models, manifest) = (repo.models(), repo.manifest_path());
    let (models, manifest) = (models.to_str().unwrap(), manifest.to_str().unwrap());
    let server =
        Server::start_ready(&repo.args_with(models, manifest, &["--model-name", "breast-cancer"]))
            .await;
    for model in ["breast-cancer", "diabetes"] {
        let (status, body) = server.get(&format!("/v2/models/{model}")).await;
        assert_eq!((status, &body["name"]), (200, &json!(model)));
    }
    drop(server);

    let (status, output) = run_to_exit(
        server_command(&repo.args_with(models, manifest, &["--model-name", "my-isvc"])),
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("--model-name my-isvc: the repository has several models (breast-cancer, diabetes) and none is named my-isvc"),
        "{output}"
    );
}
