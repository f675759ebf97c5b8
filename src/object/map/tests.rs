use super::*;
use crate::page::{MemBackend, PAGE_SIZE};

fn store() -> Store {
    Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("create")
}

fn read(s: &mut Store, m: &MapRoot, idx: u64) -> u8 {
    let p = m.get(s, idx).expect("get");
    let mut b = [0u8; 1];
    s.read_data(p, 0, &mut b).expect("read");
    b[0]
}

#[test]
fn write_read_holes_and_population() {
    let mut s = store();
    let mut m = MapRoot::EMPTY;
    m.write_data(&mut s, 0, 0, &[1]).expect("w");
    m.write_data(&mut s, 600, 0, &[2]).expect("w");
    m.write_data(&mut s, 300_000, 0, &[3]).expect("w");
    assert_eq!(m.depth, 3);
    assert_eq!(read(&mut s, &m, 0), 1);
    assert_eq!(read(&mut s, &m, 600), 2);
    assert_eq!(read(&mut s, &m, 300_000), 3);
    assert!(m.get(&mut s, 5).expect("get").is_zero());
    assert_eq!(m.population(&mut s).expect("pop"), 3);
    assert_eq!(m.next_data(&mut s, 1).expect("nd"), Some(600));
    assert_eq!(m.next_data(&mut s, 601).expect("nd"), Some(300_000));
    assert_eq!(m.next_data(&mut s, 300_001).expect("nd"), None);
    assert_eq!(m.next_hole(&mut s, 0).expect("nh"), 1);
    assert_eq!(m.next_hole(&mut s, 600).expect("nh"), 601);
}

#[test]
fn share_then_write_copies_one_path() {
    let mut s = store();
    let mut a = MapRoot::EMPTY;
    for i in 0..2000 {
        a.write_data(&mut s, i, 0, &[7]).expect("w");
    }
    let allocs_before = s.counters().allocs;
    let mut b = a.share(&mut s).expect("share");
    assert_eq!(
        s.counters().allocs,
        allocs_before,
        "sharing allocates nothing"
    );
    b.write_data(&mut s, 1500, 0, &[9]).expect("w");
    // One data page plus one node per level were copied.
    assert_eq!(s.counters().allocs - allocs_before, 1 + b.depth as u64);
    assert_eq!(read(&mut s, &a, 1500), 7);
    assert_eq!(read(&mut s, &b, 1500), 9);
    assert_eq!(read(&mut s, &b, 1499), 7);
    assert_eq!(a.get(&mut s, 3).expect("g"), b.get(&mut s, 3).expect("g"));
    assert_eq!(b.population(&mut s).expect("pop"), 2000);
}

#[test]
fn clear_range_and_free_return_every_page() {
    let mut s = store();
    s.commit().expect("commit");
    let free0 = s.superblock().free_pages;
    let mut a = MapRoot::EMPTY;
    for i in (0..3000).step_by(3) {
        a.write_data(&mut s, i, 0, &[1u8; PAGE_SIZE]).expect("w");
    }
    let mut b = a.share(&mut s).expect("share");
    b.clear_range(&mut s, 10, 2500).expect("clear");
    assert_eq!(b.population(&mut s).expect("pop"), 4 + (3000 - 2502) / 3);
    assert_eq!(a.population(&mut s).expect("pop"), 1000);
    assert!(b.get(&mut s, 12).expect("g").is_zero());
    assert!(!a.get(&mut s, 12).expect("g").is_zero());
    a.free(&mut s).expect("free");
    b.free(&mut s).expect("free");
    s.commit().expect("commit");
    let _ = free0;
    // Every page but the superblock and the group headers is free again.
    let reserved = s.superblock().groups + 1;
    assert_eq!(s.superblock().free_pages, s.total_pages() - reserved);
}

#[test]
fn clone_range_shares_pages() {
    let mut s = store();
    let mut a = MapRoot::EMPTY;
    for i in 0..10 {
        a.write_data(&mut s, i, 0, &[i as u8 + 1]).expect("w");
    }
    let mut b = MapRoot::EMPTY;
    b.clone_range(&mut s, Some(&a), 2, 100, 5).expect("clone");
    assert_eq!(read(&mut s, &b, 100), 3);
    assert_eq!(read(&mut s, &b, 104), 7);
    let p = a.get(&mut s, 2).expect("g");
    assert_eq!(s.refcount(p).expect("rc"), 2);
    b.write_data(&mut s, 100, 0, &[99]).expect("w");
    assert_eq!(read(&mut s, &a, 2), 3);
    assert_eq!(s.refcount(p).expect("rc"), 1);
    // Within one map.
    a.clone_range(&mut s, None, 0, 20, 3).expect("clone");
    assert_eq!(read(&mut s, &a, 21), 2);
}

#[test]
fn graft_shares_whole_subtrees_and_matches_per_page_clone() {
    let mut s = store();
    let mut a = MapRoot::EMPTY;
    for i in (0..3000).chain(300_000..300_010) {
        a.write_data(&mut s, i, 0, &[(i % 250) as u8 + 1])
            .expect("w");
    }
    // Whole map into an empty one: the root is shared.
    let allocs = s.counters().allocs;
    let mut b = MapRoot::EMPTY;
    b.graft(&mut s, &a, 0, a.capacity()).expect("graft");
    assert_eq!(b.node, a.node);
    assert_eq!(s.counters().allocs, allocs);
    // A ragged range into a map that has data of its own.
    let mut c = MapRoot::EMPTY;
    for i in 0..5 {
        c.write_data(&mut s, i * 700, 0, &[200]).expect("w");
    }
    let allocs = s.counters().allocs;
    c.graft(&mut s, &a, 7, 2900).expect("graft");
    assert!(
        s.counters().allocs - allocs < 10,
        "only edge nodes are allocated"
    );
    for i in [0u64, 6, 7, 500, 509, 510, 1019, 1020, 2899, 2900, 2100] {
        let want = if (7..2900).contains(&i) {
            (i % 250) as u8 + 1
        } else if i % 700 == 0 && i < 3500 {
            200
        } else {
            0
        };
        assert_eq!(read(&mut s, &c, i), want, "index {i}");
    }
    assert_eq!(
        c.population(&mut s).expect("pop"),
        2893 + 1,
        "own page 0 plus the graft"
    );
    // Writing the graft leaves the source alone.
    c.write_data(&mut s, 1000, 0, &[77]).expect("w");
    assert_eq!(read(&mut s, &a, 1000), (1000 % 250) as u8 + 1);
    // Grafting from a smaller tree into a deeper one.
    let mut d = MapRoot::EMPTY;
    d.write_data(&mut s, 400_000, 0, &[9]).expect("w");
    let mut small = MapRoot::EMPTY;
    for i in 0..600 {
        small.write_data(&mut s, i, 0, &[3]).expect("w");
    }
    d.graft(&mut s, &small, 0, 600).expect("graft");
    assert_eq!(read(&mut s, &d, 599), 3);
    assert_eq!(read(&mut s, &d, 400_000), 9);
    assert_eq!(d.population(&mut s).expect("pop"), 601);
    for m in [&mut a, &mut b, &mut c, &mut d, &mut small] {
        m.free(&mut s).expect("free");
    }
    s.commit().expect("commit");
    let reserved = s.superblock().groups + 1;
    assert_eq!(
        s.superblock().free_pages,
        s.total_pages() - reserved,
        "nothing leaked"
    );
}

#[test]
fn a_node_of_the_wrong_level_or_a_deep_root_is_corrupt() {
    let mut s = store();
    let mut m = MapRoot::EMPTY;
    m.write_data(&mut s, 600, 0, &[2]).expect("w");
    assert_eq!(m.depth, 2);
    // The root claims level 0 (as if it were a leaf): every read through it is refused.
    let root = m.node;
    let pop = node::population(s.meta_mut(root, Kind::MapNode).expect("root"));
    node::set_word(s.meta_mut(root, Kind::MapNode).expect("root"), 0, pop);
    let got = m.get(&mut s, 600);
    assert!(
        matches!(got, Err(Error::Corrupt { page, .. }) if page == root.0),
        "{got:?}"
    );
    let mut copy = m;
    let freed = copy.free(&mut s);
    assert!(
        matches!(freed, Err(Error::Corrupt { page, .. }) if page == root.0),
        "{freed:?}"
    );
    // A depth past MAX_DEPTH (read from disk) is refused before the map grows.
    let mut deep = MapRoot {
        node: PageNo::ZERO,
        depth: MAX_DEPTH + 1,
    };
    assert!(matches!(
        deep.write_data(&mut s, 0, 0, &[1]),
        Err(Error::Corrupt { .. })
    ));
    let mut no_depth = MapRoot {
        node: root,
        depth: 0,
    };
    assert!(matches!(
        no_depth.set(&mut s, 0, PageNo::ZERO),
        Err(Error::Corrupt { .. })
    ));
}
