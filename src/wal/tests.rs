use std::path::Path;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qkv-wal-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_log(dir: &Path, from: u64, records: &[&str], durability: Durability) -> u64 {
    let log = Log::start(dir, durability, from, 0).unwrap();
    for r in records {
        log.append(|b| b.extend_from_slice(r.as_bytes()));
    }
    let next = log.next_position();
    log.close();
    next
}

fn read_all(dir: &Path, from: u64) -> Result<(Vec<(u64, String)>, Replayed), OpenError> {
    let mut seen = Vec::new();
    let replayed = replay(dir, from, &mut |position, payload| {
        seen.push((position, String::from_utf8_lossy(payload).into_owned()));
        Ok(())
    })?;
    Ok((seen, replayed))
}

#[test]
fn records_come_back_in_order_across_restarts_and_segments() {
    let dir = temp_dir("order");
    let next = write_log(&dir, 1, &["a", "b"], Durability::Always);
    assert_eq!(next, 3);
    // A second life starts a new segment where the first ended.
    write_log(&dir, next, &["c"], Durability::EverySec);
    let (seen, replayed) = read_all(&dir, 0).unwrap();
    assert_eq!(
        seen,
        vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]
    );
    assert_eq!(replayed.next, 4);
    assert_eq!(replayed.cut, None);
    // From a snapshot's position on, only the later records.
    let (seen, _) = read_all(&dir, 3).unwrap();
    assert_eq!(seen, vec![(3, "c".into())]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_log_cut_anywhere_keeps_every_record_before_the_cut() {
    let dir = temp_dir("cut");
    write_log(&dir, 1, &["first", "second", "third"], Durability::Memory);
    let (_, path) = segments(&dir).unwrap().remove(0);
    let whole = fs::read(&path).unwrap();
    let ends: Vec<usize> = {
        let mut at = 0;
        let mut ends = Vec::new();
        while let Ok(Some((_, len))) = frame::decode(&whole[at..]) {
            at += len;
            ends.push(at);
        }
        ends
    };
    for cut in 0..whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let (seen, replayed) = read_all(&dir, 0).unwrap();
        let intact = ends.iter().filter(|end| **end <= cut).count();
        assert_eq!(seen.len(), intact, "cut at {cut}");
        assert_eq!(replayed.next, intact as u64 + 1);
        // The torn part is gone from the file, so a later life appends after intact records.
        let kept = fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(kept, ends.get(intact.wrapping_sub(1)).copied().unwrap_or(0));
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_record_in_the_middle_stops_recovery_with_the_file_and_offset() {
    let dir = temp_dir("damage");
    write_log(&dir, 1, &["first", "second", "third"], Durability::Memory);
    let (_, path) = segments(&dir).unwrap().remove(0);
    let mut bytes = fs::read(&path).unwrap();
    let second = frame::HEADER + "first".len();
    bytes[second + frame::HEADER] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let err = read_all(&dir, 0).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(&format!("at byte {second}")), "{err}");
    assert!(err.contains("Move"), "{err}");
    // A damaged record that is the very last one is a torn end instead.
    let mut bytes = fs::read(&path).unwrap();
    bytes[second + frame::HEADER] ^= 0x20;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (seen, replayed) = read_all(&dir, 0).unwrap();
    assert_eq!(seen.len(), 2);
    assert!(replayed.cut.is_some());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_in_an_older_segment_or_a_missing_one_is_refused() {
    let dir = temp_dir("older");
    let next = write_log(&dir, 1, &["a", "b"], Durability::Memory);
    let next = write_log(&dir, next, &["c"], Durability::Memory);
    write_log(&dir, next, &["d"], Durability::Memory);
    let all = segments(&dir).unwrap();
    // A torn end of a segment that is not the last one is damage: records follow it.
    let (_, first) = &all[0];
    let bytes = fs::read(first).unwrap();
    fs::write(first, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(read_all(&dir, 0), Err(OpenError::Damaged { .. })));
    fs::write(first, &bytes).unwrap();
    // A segment gone from the middle leaves a gap.
    fs::remove_file(&all[1].1).unwrap();
    let err = read_all(&dir, 0).unwrap_err().to_string();
    assert!(err.contains("records are missing"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshots_are_read_back_and_compaction_drops_what_they_cover() {
    let dir = temp_dir("snap");
    let log = Log::start(&dir, Durability::EverySec, 1, 0).unwrap();
    for i in 0..10 {
        log.append(|b| b.extend_from_slice(format!("r{i}").as_bytes()));
    }
    let covers = log.rotate();
    assert_eq!(covers, 11);
    let mut snap = SnapshotWriter::create(&dir, covers).unwrap();
    for i in 0..3 {
        snap.push(|b| b.extend_from_slice(format!("s{i}").as_bytes()))
            .unwrap();
    }
    snap.finish().unwrap();
    log.append(|b| b.extend_from_slice(b"after"));
    log.close();
    assert!(compact(&dir, covers).unwrap() > 0);
    let (position, path) = snapshots(&dir).unwrap().pop().unwrap();
    assert_eq!(position, covers);
    let mut seen = Vec::new();
    let read = read_snapshot(&path, &mut |p| {
        seen.push(String::from_utf8_lossy(p).into_owned());
        Ok(())
    })
    .unwrap();
    assert!(matches!(read, snapshot::SnapshotRead::Complete(3)));
    assert_eq!(seen, ["s0", "s1", "s2"]);
    let (records, _) = read_all(&dir, covers).unwrap();
    assert_eq!(records, vec![(11, "after".to_string())]);
    // Without the snapshot the log no longer reaches back to the start.
    assert!(read_all(&dir, 0).is_err());
    // A snapshot cut short is incomplete, not damaged.
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let read = read_snapshot(&path, &mut |_| Ok(())).unwrap();
    assert!(matches!(read, snapshot::SnapshotRead::Incomplete));
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_sync_point_is_reached_once_the_records_before_it_are_written() {
    let dir = temp_dir("sync");
    let log = Log::start(&dir, Durability::Always, 1, 0).unwrap();
    let mut waits = Vec::new();
    for i in 0..100u32 {
        log.append(|b| b.extend_from_slice(&i.to_le_bytes()));
        if let Some(point) = log.sync_point() {
            waits.push(point.reached());
        }
    }
    for w in waits {
        w.await;
    }
    assert!(log.durable_position() >= 101);
    assert!(log.sync_point().is_none());
    log.close();
    let (seen, _) = read_all(&dir, 0).unwrap();
    assert_eq!(seen.len(), 100);
    fs::remove_dir_all(&dir).unwrap();
}

/// Found by fuzzing (`tests/fuzz/regressions/log_record-cursor-spins-on-empty-segment`): a
/// cursor at an empty segment, told records exist up to a later position, went on reopening
/// that segment forever; it returns what it has instead.
#[test]
fn a_cursor_at_an_empty_segment_returns_instead_of_spinning() {
    let dir = temp_dir("empty-segment");
    std::fs::write(dir.join(format!("{:020}.log", 1)), b"").unwrap();
    let mut cursor = reader::Cursor::open(&dir, 1).unwrap();
    assert!(cursor.read(10, 100).unwrap().is_empty());
    assert_eq!(cursor.next_position(), 1);
    std::fs::remove_dir_all(&dir).ok();
}
