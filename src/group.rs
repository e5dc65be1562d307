//! Grouping without hashing, for the handful of keys a batch has (queues,
//! kinds of outcome).

/// The values of `pairs` grouped by key: groups in the order their key first
/// appears, values in their order.
pub(crate) fn group_by<K: PartialEq, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Vec<(K, Vec<V>)> {
    let mut groups: Vec<(K, Vec<V>)> = Vec::new();
    for (k, v) in pairs {
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, vs)) => vs.push(v),
            None => groups.push((k, vec![v])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_keep_first_seen_order() {
        let g = super::group_by([("b", 1), ("a", 2), ("b", 3)]);
        assert_eq!(g, [("b", vec![1, 3]), ("a", vec![2])]);
    }
}
