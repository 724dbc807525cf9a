//! `glimpse batch`: shards run as Kubernetes and Slurm start them, each video captioned exactly
//! once whatever the shard count, a killed worker finished by rerunning it, the merge in the
//! ActivityNet layout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const VIDEOS: usize = 5;

fn glimpse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_glimpse"));
    command.args(["--device", "cpu"]);
    command
}

fn check(output: Output) -> Output {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A folder with `VIDEOS` world videos, one file that is no video, and a manifest of them all
/// (one id given by tab, the rest from file names).
fn archive(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glimpse-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("videos")).unwrap();
    let mut manifest = String::from("# world videos and one broken file\n");
    for seed in 0..VIDEOS {
        let video = dir.join(format!("videos/w{seed}.gif"));
        check(glimpse().args(["world", "video", "--seed", &seed.to_string(), "--out"]).arg(&video).output().unwrap());
        manifest += &if seed == 2 { format!("two\tvideos/w{seed}.gif\n") } else { format!("videos/w{seed}.gif\n") };
    }
    std::fs::write(dir.join("videos/broken.gif"), b"GIF89a, or so it says").unwrap();
    manifest += "videos/broken.gif\n";
    std::fs::write(dir.join("manifest.txt"), manifest).unwrap();
    dir
}

/// A batch over the archive's manifest, run from the archive's folder with relative paths, as a
/// user would type it.
fn batch(dir: &Path, out: &str) -> Command {
    let mut command = glimpse();
    command.current_dir(dir).args(["batch", "caption-video", "manifest.txt", "--out-dir", out, "--format", "json"]);
    command
}

/// The JSON events a run printed.
fn events(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn finish(output: &Output) -> Value {
    events(output).into_iter().find(|e| e["event"] == "finish").expect("a finish event")
}

/// Every file of `dir` but the settings record, name and contents, in name order.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".glimpse-batch.json")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(name, _)| name.as_str()).collect()
}

#[test]
fn shards_from_kubernetes_and_slurm_caption_every_video_exactly_once() {
    let dir = archive("shards");
    let one = check(batch(&dir, "one").output().unwrap());
    assert_eq!(finish(&one)["captioned"], VIDEOS);
    assert_eq!(finish(&one)["failed"], 1);
    let reference = contents(&dir.join("one"));
    assert_eq!(
        names(&reference),
        ["broken.error.json", "two.json", "w0.json", "w1.json", "w3.json", "w4.json"],
        "one result per video, one error record, nothing temporary"
    );

    // Three workers at once, as an Indexed Job with completions: 3 starts them.
    let workers: Vec<_> = (0..3)
        .map(|index| {
            let mut command = batch(&dir, "k8s");
            command.arg("--shards").arg("3").env("JOB_COMPLETION_INDEX", index.to_string());
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let outputs: Vec<Output> = workers.into_iter().map(|w| check(w.wait_with_output().unwrap())).collect();
    let captioned: u64 = outputs.iter().map(|o| finish(o)["captioned"].as_u64().unwrap()).sum();
    assert_eq!(captioned, VIDEOS as u64, "each video in exactly one shard");
    assert_eq!(contents(&dir.join("k8s")), reference, "the same results as one worker, byte for byte");

    // The same folder as a Slurm array of two (`--array=1-2`): another count, nothing captioned twice.
    for task in 1..=2 {
        let mut command = batch(&dir, "k8s");
        command.env("SLURM_ARRAY_TASK_ID", task.to_string());
        command.env("SLURM_ARRAY_TASK_COUNT", "2").env("SLURM_ARRAY_TASK_MIN", "1");
        let run = check(command.output().unwrap());
        assert_eq!(finish(&run)["captioned"], 0);
        assert_eq!(finish(&run)["failed"], 0, "failures are not retried unless asked");
    }
    assert_eq!(contents(&dir.join("k8s")), reference);

    // The merge: the ActivityNet Captions layout, with the failure named.
    let merged = dir.join("results.json");
    let merge = check(
        glimpse()
            .args(["batch", "merge"])
            .arg(dir.join("k8s"))
            .arg("--out")
            .arg(&merged)
            .arg("--manifest")
            .arg(dir.join("manifest.txt"))
            .output()
            .unwrap(),
    );
    assert!(String::from_utf8_lossy(&merge.stderr).contains("failed: 1 (broken)"));
    let results: Value = serde_json::from_slice(&std::fs::read(&merged).unwrap()).unwrap();
    assert_eq!(results["version"], "VERSION 1.0");
    assert!(results["external_data"]["used"].is_boolean());
    let videos = results["results"].as_object().unwrap();
    assert_eq!(videos.len(), VIDEOS);
    for events in videos.values() {
        for event in events.as_array().unwrap() {
            let [start, end] = [0, 1].map(|i| event["timestamp"][i].as_f64().unwrap());
            assert!(start < end && event["sentence"].as_str().is_some_and(|s| !s.is_empty()), "{event}");
        }
    }

    // Scored against the world's own truth, written in the ActivityNet layout.
    let mut truth = serde_json::Map::new();
    for seed in 0..VIDEOS {
        let id = if seed == 2 { "two".to_string() } else { format!("w{seed}") };
        let annotation: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("videos/w{seed}.json"))).unwrap()).unwrap();
        let events = annotation["events"].as_array().unwrap();
        let timestamps: Vec<Value> = events.iter().map(|e| serde_json::json!([e["start"], e["end"]])).collect();
        let sentences: Vec<Value> = events.iter().map(|e| e["caption"].clone()).collect();
        truth.insert(
            id,
            serde_json::json!({ "duration": annotation["duration"], "timestamps": timestamps, "sentences": sentences }),
        );
    }
    let truth_path = dir.join("truth.json");
    std::fs::write(&truth_path, Value::Object(truth).to_string()).unwrap();
    let score =
        check(glimpse().arg("score").arg(&merged).arg(&truth_path).args(["--format", "json"]).output().unwrap());
    let scores: Value = serde_json::from_slice(&score.stdout).unwrap();
    let mean = scores["scores"].as_array().unwrap().last().unwrap();
    assert!(scores["soda_c"].is_null() && mean.get("meteor").is_none(), "no METEOR without --meteor-jar: {scores}");
    assert!(mean["recall"].as_f64().unwrap() > 0.5, "the embedded default finds the world's events: {mean}");
    assert!(
        (0.0..=1.0).contains(&mean["bleu_4"].as_f64().unwrap()) && mean["cider_d"].as_f64().unwrap() > 0.0,
        "{mean}"
    );
    let no_jar = glimpse()
        .arg("score")
        .arg(&merged)
        .arg(&truth_path)
        .args(["--meteor-jar", "/nonexistent/m.jar"])
        .output()
        .unwrap();
    assert!(
        !no_jar.status.success()
            && String::from_utf8_lossy(&no_jar.stderr).contains("/nonexistent/m.jar is not a file")
    );
    let refused = glimpse().arg("score").arg(&truth_path).arg(&truth_path).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a submission in the ActivityNet Captions layout"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_worker_loses_at_most_the_video_in_flight() {
    let dir = archive("killed");
    let reference = {
        check(batch(&dir, "reference").output().unwrap());
        contents(&dir.join("reference"))
    };
    // Killed (SIGKILL) as soon as its first video is done, while the second is in flight.
    let mut worker = batch(&dir, "out").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let first = lines.find(|line| line.as_ref().unwrap().contains("\"event\":\"video\"")).unwrap().unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    let left = contents(&dir.join("out"));
    assert!(left.iter().any(|(name, _)| *name == format!("{}.json", first["id"].as_str().unwrap())));

    // The same command again finishes the shard, passing over what was done.
    let rerun = check(batch(&dir, "out").output().unwrap());
    let start = events(&rerun).into_iter().find(|e| e["event"] == "start").unwrap();
    assert!(start["done"].as_u64().unwrap() >= 1, "{start}");
    assert_eq!(finish(&rerun)["captioned"].as_u64().unwrap() + start["done"].as_u64().unwrap(), VIDEOS as u64);
    assert_eq!(contents(&dir.join("out")), reference, "identical results, nothing temporary left");

    // A worker whose log closes after its first line (a `tee` killed) goes on to the end.
    let mut worker = glimpse()
        .current_dir(&dir)
        .args(["batch", "caption-video", "manifest.txt", "--out-dir", "unlogged"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(worker.stderr.take().unwrap());
    log.read_line(&mut String::new()).unwrap();
    drop(log);
    assert!(worker.wait().unwrap().success());
    assert_eq!(contents(&dir.join("unlogged")), reference);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The repository's file at `path`.
fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The deployment files run as their schedulers would start them (there is no cluster here): the
/// Kubernetes Job's container arguments once per index with `JOB_COMPLETION_INDEX`, the Slurm
/// script once per array task with the variables Slurm sets. Both caption the archive once.
#[test]
fn deployment_files_run_as_their_schedulers_start_them() {
    let dir = archive("deploy");
    let captions = dir.join("captions");
    let bin = Path::new(env!("CARGO_BIN_EXE_glimpse")).parent().unwrap().to_path_buf();
    let path =
        std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())));
    let path = path.unwrap();

    let script = repo_file("deploy/slurm/caption-archive.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let array = text.lines().find_map(|l| l.strip_prefix("#SBATCH --array=")).expect("an array range");
    let (first, last) = array.split_once('-').unwrap();
    let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
    for task in first..=last {
        let mut command = Command::new("bash");
        command.arg(&script).env("ARCHIVE", &dir).env("PATH", &path);
        command.env("SLURM_ARRAY_TASK_ID", task.to_string()).env("SLURM_ARRAY_TASK_MIN", first.to_string());
        command.env("SLURM_ARRAY_TASK_COUNT", (last - first + 1).to_string());
        check(command.output().unwrap());
    }
    let by_slurm = contents(&captions);
    assert_eq!(by_slurm.len(), 3 * VIDEOS + 1, "json, srt and vtt per video, one error record: {:?}", names(&by_slurm));
    std::fs::remove_dir_all(&captions).unwrap();

    let job = std::fs::read_to_string(repo_file("deploy/kubernetes/caption-archive.yaml")).unwrap();
    let field =
        |name: &str| job.lines().find_map(|l| l.trim().strip_prefix(name)).unwrap_or_else(|| panic!("no {name}"));
    let completions: usize = field("completions:").trim().parse().unwrap();
    let args: Vec<String> = serde_json::from_str(field("args:")).unwrap();
    let archive = dir.to_str().unwrap();
    let args: Vec<String> = args.iter().map(|a| a.replace("/archive", archive)).collect();
    assert!(args.windows(2).any(|w| w[0] == "--shards" && w[1] == completions.to_string()), "--shards = completions");
    for index in 0..completions {
        let mut command = Command::new(env!("CARGO_BIN_EXE_glimpse"));
        check(command.args(&args).env("JOB_COMPLETION_INDEX", index.to_string()).output().unwrap());
    }
    assert_eq!(contents(&captions), by_slurm, "the same results from either scheduler");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_manifests_shards_and_out_dirs_are_refused_and_a_shard_of_failures_fails() {
    let dir = std::env::temp_dir().join(format!("glimpse-batch-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("manifest.txt");
    std::fs::write(&manifest, "a/v.gif\nb/v.gif\n").unwrap();
    let run = |extra: &[&str], envs: &[(&str, &str)]| {
        let mut command = glimpse();
        command.args(["batch", "caption-video"]).arg(&manifest).arg("--out-dir").arg(dir.join("out")).args(extra);
        command.env_remove("JOB_COMPLETION_INDEX").env_remove("SLURM_ARRAY_TASK_ID");
        let output = command.envs(envs.iter().copied()).output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&[], &[]).contains("the same id `v`"));
    std::fs::write(&manifest, "v.gif\n").unwrap();
    assert!(run(&["--shard", "3/3"], &[]).contains("shard 3/3"));
    assert!(run(&[], &[("JOB_COMPLETION_INDEX", "1")]).contains("--shards N"));
    assert!(run(&["--shards", "3"], &[]).contains("JOB_COMPLETION_INDEX, and it is not set"));
    assert!(!dir.join("out").exists(), "nothing written");
    // The videos' folder, where a video's `<id>.json` may be its truth.
    let mut command = glimpse();
    command.args(["batch", "caption-video"]).arg(&manifest).arg("--out-dir").arg(&dir);
    let stderr = String::from_utf8_lossy(&command.output().unwrap().stderr).into_owned();
    assert!(stderr.contains("a folder of the manifest's videos"), "{stderr}");
    // Every video failing (here none exists) is a failure of the run, said as one; a rerun passes
    // the failures over, and a shard of bad videos completes.
    std::fs::write(&manifest, "v.gif\nw.gif\n").unwrap();
    let stderr = run(&[], &[]);
    assert!(stderr.contains("every one of the 2 videos this run captioned failed"), "{stderr}");
    assert!(dir.join("out/v.error.json").exists() && dir.join("out/w.error.json").exists());
    let mut command = glimpse();
    command.args(["batch", "caption-video"]).arg(&manifest).arg("--out-dir").arg(dir.join("out"));
    assert!(command.env_remove("JOB_COMPLETION_INDEX").output().unwrap().status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder `glimpse world video` wrote (each GIF's truth beside it as JSON) with a file name no
/// id may hold: the JSON is passed over, the id made of the name. Then a rerun after a subtitle
/// was deleted and a result cut short: the subtitle is made from the result, the cut result is
/// said on stderr and captioned again; both come back byte for byte.
#[test]
fn folder_names_become_ids_and_reruns_mend_what_is_missing_or_cut_short() {
    let dir = std::env::temp_dir().join(format!("glimpse-batch-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let videos = dir.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    for (seed, name) in [(1, "v1.gif"), (3, "my clip.gif")] {
        check(
            glimpse()
                .args(["world", "video", "--seed", &seed.to_string(), "--out"])
                .arg(videos.join(name))
                .output()
                .unwrap(),
        );
    }
    let run = || {
        let mut command = glimpse();
        command.current_dir(&dir).args(["batch", "caption-video", "videos", "--out-dir", "out", "--subtitles"]);
        check(command.output().unwrap())
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("passed over 2 files of videos that are no video (my clip.json, v1.json)"), "{stderr}");
    assert!(stderr.contains("2 captioned, 0 failed"), "{stderr}");
    let reference = contents(&dir.join("out"));
    let expected = ["my_clip.json", "my_clip.srt", "my_clip.vtt", "v1.json", "v1.srt", "v1.vtt"];
    assert_eq!(names(&reference), expected);

    std::fs::remove_file(dir.join("out/my_clip.srt")).unwrap();
    let result = std::fs::read(dir.join("out/v1.json")).unwrap();
    std::fs::write(dir.join("out/v1.json"), &result[..result.len() / 2]).unwrap();
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("v1.json is not a glimpse result"), "{stderr}");
    assert!(stderr.contains("moved to v1.json.unreadable, captioning v1 again"), "{stderr}");
    assert!(stderr.contains("0 done and 0 failed before, 1 to complete from their results, 1 to caption"), "{stderr}");
    assert!(stderr.contains("my_clip: wrote my_clip.srt from its result"), "{stderr}");
    let kept = dir.join("out/v1.json.unreadable");
    assert_eq!(std::fs::read(&kept).unwrap(), &result[..result.len() / 2], "the cut file is kept aside");
    std::fs::remove_file(kept).unwrap();
    assert_eq!(contents(&dir.join("out")), reference);

    // Two names that give one id: both named, and the way out said.
    std::fs::write(videos.join("my_clip.webm"), b"").unwrap();
    let mut command = glimpse();
    let clash =
        command.current_dir(&dir).args(["batch", "caption-video", "videos", "--out-dir", "out"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        !clash.status.success() && stderr.contains("my clip.gif and ") && stderr.contains("my_clip.webm"),
        "{stderr}"
    );
    assert!(stderr.contains("in a manifest instead, one `id<TAB>path` a line"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 300 MB manifest of one line, or a line of a megabyte: refused at once with a short message
/// naming the manifest (and the line), before any model loads.
#[test]
fn huge_manifests_are_refused_with_short_messages() {
    let dir = std::env::temp_dir().join(format!("glimpse-batch-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("manifest.txt");
    let run = || {
        let mut command = glimpse();
        command.args(["batch", "caption-video"]).arg(&manifest).arg("--out-dir").arg(dir.join("out"));
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // Sparse: the size of 300 MB without writing them.
    std::fs::File::create(&manifest).unwrap().set_len(300 << 20).unwrap();
    let err = run();
    assert!(err.contains("manifest.txt is larger than 256 MiB") && err.len() < 1000, "{err}");
    std::fs::write(&manifest, "a\tb".repeat(400_000)).unwrap();
    let err = run();
    assert!(err.contains("manifest.txt line 1: longer than 8192 bytes") && err.len() < 1000, "{err}");
    assert!(!dir.join("out").exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `merge --manifest` merges the manifest's videos only (an earlier archive's results in the
/// same folder are left out and named), and refuses a result whose times are impossible.
#[test]
fn merge_keeps_to_the_manifest_and_refuses_impossible_times() {
    let dir = std::env::temp_dir().join(format!("glimpse-batch-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let video = dir.join("a.gif").display().to_string();
    let result = |start: f64, end: f64| {
        format!(
            r#"{{"video":"{video}","duration":9.0,"events":[{{"caption":"a dog.","end":{end},"score":0.5,"start":{start}}}]}}"#
        )
    };
    std::fs::write(dir.join("out/a.json"), result(0.0, 4.0)).unwrap();
    std::fs::write(dir.join("out/old.json"), result(0.0, 4.0)).unwrap();
    std::fs::write(dir.join("manifest.txt"), "a.gif\nb.gif\n").unwrap();
    let merge = || {
        let mut command = glimpse();
        command.current_dir(&dir).args(["batch", "merge", "out", "--out", "merged.json", "--manifest", "manifest.txt"]);
        command.output().unwrap()
    };
    let merged = check(merge());
    let stderr = String::from_utf8_lossy(&merged.stderr);
    assert!(stderr.contains("merged 1 videos") && stderr.contains("missing: 1 (b)"), "{stderr}");
    assert!(stderr.contains("left out, not in the manifest: 1 (old)"), "{stderr}");
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("merged.json")).unwrap()).unwrap();
    assert_eq!(json["results"].as_object().unwrap().keys().collect::<Vec<_>>(), ["a"]);
    // Not into the results folder, where the next merge would take it for a result.
    let mut command = glimpse();
    command.current_dir(&dir).args(["batch", "merge", "out", "--out", "out/merged.json"]);
    let stderr = String::from_utf8_lossy(&command.output().unwrap().stderr).into_owned();
    assert!(stderr.contains("is in the results folder out") && !dir.join("out/merged.json").exists(), "{stderr}");
    // Nor as a bare file name, run inside it.
    let mut command = glimpse();
    command.current_dir(dir.join("out")).args(["batch", "merge", ".", "--out", "merged.json"]);
    let stderr = String::from_utf8_lossy(&command.output().unwrap().stderr).into_owned();
    assert!(stderr.contains("is in the results folder .") && !dir.join("out/merged.json").exists(), "{stderr}");

    std::fs::write(dir.join("out/a.json"), result(5.0, 1.0)).unwrap();
    let refused = merge();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("a.json is not a glimpse result"), "{stderr}");
    assert!(stderr.contains("event 1 (`a dog.`) starts at 5 s, after it ends at 1 s"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `glimpse score` with nothing predicted prints zeros, never `-0.0000`; a reversed timestamp in
/// the submission is refused with the file, the video and the event named (one in the truth is
/// scored as densevid_eval scores it).
#[test]
fn score_prints_positive_zeros_and_refuses_reversed_timestamps() {
    let dir = std::env::temp_dir().join(format!("glimpse-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (results, truth) = (dir.join("results.json"), dir.join("truth.json"));
    let score = || glimpse().arg("score").arg(&results).arg(&truth).output().unwrap();
    std::fs::write(&results, r#"{"results": {}}"#).unwrap();
    std::fs::write(&truth, r#"{"v1": {"duration": 9, "timestamps": [[0, 5]], "sentences": ["a dog runs."]}}"#).unwrap();
    let stdout = String::from_utf8(check(score()).stdout).unwrap();
    assert!(stdout.contains("0.0000") && !stdout.contains("-0.0000"), "{stdout}");

    std::fs::write(&results, r#"{"results": {"v1": [{"sentence": "a dog.", "timestamp": [5, 0]}]}}"#).unwrap();
    let refused = score();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("results.json: video v1, event 1 (`a dog.`): timestamp [5, 0] ends before it starts"),
        "{stderr}"
    );
    std::fs::write(&results, r#"{"results": {}}"#).unwrap();
    std::fs::write(&truth, r#"{"v1": {"timestamps": [[5, 0]], "sentences": ["a dog runs."]}}"#).unwrap();
    check(score());

    // Ids spelt two ways (ActivityNet's `v_` on one side) would score zeros: refused, both named.
    std::fs::write(&results, r#"{"results": {"1": [{"sentence": "a dog.", "timestamp": [0, 5]}]}}"#).unwrap();
    let refused = score();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("ids are like `1`, the truth's like `v1`"), "{stderr}");
    std::fs::write(&truth, "{}").unwrap();
    assert!(String::from_utf8_lossy(&score().stderr).contains("holds no video"));
    std::fs::remove_dir_all(&dir).unwrap();
}
