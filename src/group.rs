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

/// Calls `call` once per key with that key's values (every key at once),
/// each call answering per value, and returns the answers in the order of
/// `pairs` (a call that answers fewer leaves `A::default()`). The first
/// error is the answer.
pub(crate) async fn call_per_group<K, V, A, E, F, Fut>(pairs: Vec<(K, V)>, call: F) -> Result<Vec<A>, E>
where
    K: PartialEq,
    A: Default,
    F: Fn(K, Vec<V>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<A>, E>>,
{
    let n = pairs.len();
    let groups = group_by(pairs.into_iter().enumerate().map(|(i, (k, v))| (k, (i, v))));
    let mut at: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
    let calls = groups.into_iter().map(|(k, vs)| {
        let (idx, vs): (Vec<usize>, Vec<V>) = vs.into_iter().unzip();
        at.push(idx);
        call(k, vs)
    });
    let answers = futures::future::try_join_all(calls.collect::<Vec<_>>()).await?;
    let mut out: Vec<A> = std::iter::repeat_with(A::default).take(n).collect();
    for (idx, answer) in at.into_iter().zip(answers) {
        for (i, a) in idx.into_iter().zip(answer) {
            out[i] = a;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_keep_first_seen_order() {
        let g = super::group_by([("b", 1), ("a", 2), ("b", 3)]);
        assert_eq!(g, [("b", vec![1, 3]), ("a", vec![2])]);
    }

    #[test]
    fn calls_per_group_answer_in_the_order_asked() {
        let pairs = vec![("b", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5)];
        let calls = std::cell::Cell::new(0);
        let out = futures::executor::block_on(super::call_per_group(pairs, |k, vs: Vec<i32>| {
            calls.set(calls.get() + 1);
            // "c" answers nothing: its value gets the default.
            let answer: Vec<String> = if k == "c" { vec![] } else { vs.iter().map(|v| format!("{k}{v}")).collect() };
            async move { Ok::<_, ()>(answer) }
        }));
        assert_eq!(out.unwrap(), ["b1", "a2", "b3", "a4", ""]);
        assert_eq!(calls.get(), 3);
    }
}
