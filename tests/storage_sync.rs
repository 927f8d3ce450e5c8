//! `RemoteRepository::sync` called again, as a rescan in poll mode will: against moto's S3 on
//! loopback, a second sync with nothing changed downloads nothing, a version added to the
//! bucket is reported as unlisted until the manifest names it, and then only its files are
//! downloaded. Its own test binary: it sets the `AWS_*` variables object_store reads in this
//! process, which must not race another test.

mod common;

use std::path::Path;

use common::s3::{repository_files, BUCKET, PREFIX, S3};
use ferrum_serve::model::Manifest;
use ferrum_serve::storage::RemoteRepository;

#[tokio::test]
async fn a_second_sync_reports_only_what_changed() {
    let s3 = S3::start().await;
    s3.upload_repository(&[]).await;
    for (key, value) in s3.env() {
        std::env::set_var(key, value);
    }
    let cache = tempfile::tempdir().unwrap();
    let repository =
        RemoteRepository::open(&format!("s3://{BUCKET}/{PREFIX}"), cache.path()).unwrap();
    let manifest_path = repository
        .resolve_manifest(Path::new("manifest.json"))
        .await
        .unwrap();
    assert_eq!(manifest_path, repository.local_dir().join("manifest.json"));
    let manifest = Manifest::read(&manifest_path).unwrap();
    let files = repository_files().len() - 1;

    let first = repository.sync(&manifest).await.unwrap();
    assert!(first.changed());
    assert_eq!((first.downloaded.len(), first.reused.len()), (files, 0));
    assert!(first.refused.is_empty() && first.unlisted_versions.is_empty());

    let second = repository.sync(&manifest).await.unwrap();
    assert!(!second.changed());
    assert_eq!((second.downloaded.len(), second.reused.len()), (0, files));

    // A new version appears in the bucket: seen, but not mirrored until the manifest lists it.
    let version_two: Vec<(String, Vec<u8>)> = repository_files()
        .into_iter()
        .filter_map(|(relative, bytes)| {
            let file = relative.strip_prefix("diabetes/1/")?;
            Some((format!("diabetes/2/{file}"), bytes))
        })
        .collect();
    for (relative, bytes) in &version_two {
        s3.put(&format!("/{BUCKET}/{PREFIX}/{relative}"), bytes.clone())
            .await;
    }
    let third = repository.sync(&manifest).await.unwrap();
    assert!(!third.changed());
    assert_eq!(third.unlisted_versions, ["diabetes/2"]);
    assert!(!repository.local_dir().join("diabetes/2").exists());

    // The manifest names it (uploaded beside the first: moto refuses an unsigned overwrite).
    let mut raw = manifest.raw.clone();
    let models = raw["models"].as_array_mut().unwrap();
    let mut entry = models
        .iter()
        .find(|m| m["name"] == "diabetes")
        .unwrap()
        .clone();
    entry["version"] = "2".into();
    entry["path"] = "diabetes/2".into();
    models.push(entry);
    s3.put(
        &format!("/{BUCKET}/{PREFIX}/manifest-v2.json"),
        serde_json::to_vec(&raw).unwrap(),
    )
    .await;
    let manifest = Manifest::read(
        &repository
            .resolve_manifest(Path::new("manifest-v2.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let fourth = repository.sync(&manifest).await.unwrap();
    assert!(fourth.changed() && fourth.unlisted_versions.is_empty());
    let mut downloaded = fourth.downloaded.clone();
    downloaded.sort();
    let mut expected: Vec<String> = version_two
        .iter()
        .map(|(relative, _)| format!("s3://{BUCKET}/{PREFIX}/{relative}"))
        .collect();
    expected.sort();
    assert_eq!(downloaded, expected);
    assert_eq!(fourth.reused.len(), files);
    assert_eq!(
        std::fs::read(repository.local_dir().join("diabetes/2/model.onnx")).unwrap(),
        version_two
            .iter()
            .find(|(relative, _)| relative.ends_with("model.onnx"))
            .unwrap()
            .1
    );
}
