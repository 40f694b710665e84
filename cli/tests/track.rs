//! `sightline track --mot` end to end: MOTChallenge detections in, tracks out; bad input is a
//! clear error naming the line.

use std::io::Write;
use std::process::{Command, Stdio};

fn sightline(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sightline runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn two_walkers_crossing_keep_their_ids() {
    // Two pedestrians crossing at frame 25, a one-frame false positive at frame 10, and
    // walker A missed on frames 30-32.
    let mut mot = String::new();
    for f in 1..=50u32 {
        let t = f as f32;
        if !(30..=32).contains(&f) {
            mot.push_str(&format!("{f},-1,{:.1},100,40,100,0.9,-1,-1,-1\n", 100.0 + 4.0 * t));
        }
        mot.push_str(&format!("{f},-1,{:.1},104,40,100,0.8,-1,-1,-1\n", 300.0 - 4.0 * t));
        if f == 10 {
            mot.push_str("10,-1,500,400,40,100,0.7,-1,-1,-1\n");
        }
    }
    let out = sightline(&["track", "--mot", "-", "--fps", "25"], &mot);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<f64>> = stdout.lines().map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!(rows.len(), 50 + 47, "every walker box tracked, the false positive not: {stdout}");
    assert!(rows.iter().all(|r| r.len() == 10 && r[7] == -1.0));
    // Walker A (y = 100) and B (y = 104): one id each, the same before and after the crossing
    // and A's gap.
    let ids_of = |y: f64| -> std::collections::BTreeSet<u64> { rows.iter().filter(|r| r[3] == y).map(|r| r[1] as u64).collect() };
    let (a, b) = (ids_of(100.0), ids_of(104.0));
    assert_eq!((a.len(), b.len()), (1, 1), "one id each: {a:?} {b:?}");
    assert_ne!(a, b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tracked 50 frames, 98 detections"), "{stderr}");
}

#[test]
fn bad_input_names_the_line() {
    let out = sightline(&["track", "--mot", "-"], "1,-1,10,20,30,60,0.9\n2,-1,10,20,oops,60,0.9\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("oops"), "{stderr}");
    let out = sightline(&["track", "--mot", "/nonexistent/det.txt"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/det.txt"));
}
