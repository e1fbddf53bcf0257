//! Concurrent misses for one key make one storagesvc call: the stand-in holds the first
//! call's answer while the others arrive, and counts the calls.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{TestStack, eventually, header};

const READERS: usize = 20;

#[tokio::test]
async fn concurrent_misses_for_one_key_make_one_storagesvc_call() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;
    // Hold storagesvc's answer so every reader arrives while the first call is in flight.
    stack.standin().hold();

    let readers = join_all((0..READERS).map(|_| stack.get_book(2)));
    let released = async {
        let arrived = eventually(Duration::from_secs(5), || async {
            stack.standin().calls("/books/2") >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await; // the others join meanwhile
        stack.standin().release();
        arrived
    };
    let (responses, arrived) = tokio::join!(readers, released);

    assert!(arrived, "the first call never reached storagesvc");
    let mut collapsed = 0;
    for response in responses {
        let response = response?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-cache").as_deref(), Some("miss"));
        collapsed +=
            usize::from(header(&response, "cache-status").is_some_and(|s| s.contains("collapsed")));
    }
    assert_eq!(
        stack.standin().calls("/books/2"),
        1,
        "{READERS} concurrent misses, one call"
    );
    assert_eq!(
        collapsed,
        READERS - 1,
        "every reader but the leader shared its call"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_leader_whose_client_left_does_not_fail_its_followers() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;
    stack.standin().hold();

    // The leader's client gives up after 100 ms, while storagesvc's answer is held.
    let leader = stack
        .client
        .get(format!("{}/books/1", stack.address))
        .timeout(Duration::from_millis(100))
        .send();
    assert!(leader.await.is_err(), "the leader's client timed out");
    let followers = join_all((0..5).map(|_| stack.get_book(1)));
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stack.standin().release();
    };
    let (responses, ()) = tokio::join!(followers, release);

    for response in responses {
        assert_eq!(
            response?.status(),
            StatusCode::OK,
            "a follower of a cancelled leader"
        );
    }
    assert_eq!(
        stack.standin().calls("/books/1"),
        1,
        "the followers joined the leader's call"
    );
    stack.stop().await
}
