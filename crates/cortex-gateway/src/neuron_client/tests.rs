//! Reading whole answers: joined from pieces, bounded, errors passed on.

use super::*;
use http_body::Frame;
use http_body_util::StreamBody;

type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, String>>>;

fn body(parts: &[&'static [u8]]) -> StreamBody<Frames> {
    let frames: Vec<Result<Frame<Bytes>, String>> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p))))
        .collect();
    StreamBody::new(futures::stream::iter(frames))
}

#[tokio::test]
async fn pieces_are_joined() {
    assert_eq!(whole(body(&[]), 100).await.unwrap(), "");
    assert_eq!(
        whole(body(&[b"", b"ab", b"", b"cd", b"e"]), 100)
            .await
            .unwrap(),
        "abcde"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_or_failing_is_an_error() {
    assert_eq!(whole(body(&[b"abc", b"de"]), 5).await.unwrap(), "abcde");
    let e = whole(body(&[b"abc", b"def"]), 5).await.unwrap_err();
    assert!(e.is::<TooLarge>(), "{e}");
    assert!(e.to_string().contains("over 5 bytes"), "{e}");
    assert!(whole(body(&[b"abcdef"]), 5).await.is_err());
    let failing = StreamBody::new(futures::stream::iter(vec![
        Ok(Frame::data(Bytes::from_static(b"ab"))),
        Err("cut".to_string()),
    ]));
    assert_eq!(whole(failing, 100).await.unwrap_err().to_string(), "cut");
}

#[test]
fn endpoints_become_authorities() {
    let n = NodeInfo::new("a", "http://beast.internal:13131/", None);
    assert_eq!(n.base, "http://beast.internal:13131");
    assert_eq!(n.authority.as_deref(), Some("beast.internal:13131"));
    let n = NodeInfo::new("a", "http://beast", None);
    assert_eq!(n.authority.as_deref(), Some("beast:80"));
    for bad in ["https://beast:1", "beast:1", "http://beast/x y"] {
        assert_eq!(NodeInfo::new("a", bad, None).authority, None, "{bad}");
    }
}
