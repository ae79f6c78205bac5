//! The stream lifecycle and the host's channel.

use domain::stream::{self, ChannelState, StartStream, StreamCommand, StreamState};
use events_schema::{Event, StreamStatus};

use crate::spec::*;

fn start() -> StartStream {
    StartStream {
        stream_id: user(700),
        host_id: user(2),
        title: " Friday night ".into(),
        category: "Music".into(),
        at: at(5),
    }
}

fn live() -> StreamState {
    let events = stream::decide_start(&None, &None, &start()).expect("started");
    events.iter().fold(None, stream::evolve)
}

fn codes(result: Result<Vec<Event>, domain::DomainError>) -> Result<Vec<&'static str>, &'static str> {
    result.map(|events| events.iter().map(Event::type_name).collect()).map_err(|e| e.code())
}

#[test]
fn starting_a_stream_writes_the_stream_and_the_hosts_channel() {
    let events = stream::decide_start(&None, &None, &start()).expect("started");
    let [Event::StreamStarted(started), Event::ChannelWentLive(channel)] = events.as_slice() else {
        panic!("stream.started then channel.went_live: {events:?}")
    };
    assert_eq!((started.title.as_str(), started.category.as_str()), ("Friday night", "music"));
    assert_eq!(started.state_after.status, StreamStatus::Live);
    assert_eq!(started.state_after.started_at, at(5));
    assert_eq!((channel.host_id, channel.stream_id), (user(2), user(700)));
    let channel: ChannelState = events.iter().fold(None, stream::evolve_channel);
    assert_eq!(channel, Some(user(700)));
}

#[test]
fn a_host_has_one_live_stream_at_a_time() {
    let channel: ChannelState = Some(user(699));
    assert_eq!(codes(stream::decide_start(&channel, &None, &start())), Err("stream_already_live"));
    assert_eq!(codes(stream::decide_start(&None, &live(), &start())), Err("conflict"));
}

#[test]
fn a_stream_needs_a_title_and_a_category() {
    let untitled = StartStream { title: "".into(), ..start() };
    assert_eq!(codes(stream::decide_start(&None, &None, &untitled)), Err("validation_failed"));
    let long = StartStream { category: "x".repeat(41), ..start() };
    assert_eq!(codes(stream::decide_start(&None, &None, &long)), Err("validation_failed"));
}

#[test]
fn viewers_join_and_leave_a_live_stream() {
    let join = StreamCommand::Join { viewer_id: user(3) };
    assert_eq!(codes(stream::decide(user(700), &live(), &join)), Ok(vec!["stream.viewer_joined"]));
    let leave = StreamCommand::Leave { viewer_id: user(3) };
    assert_eq!(codes(stream::decide(user(700), &live(), &leave)), Ok(vec!["stream.viewer_left"]));
    assert_eq!(codes(stream::decide(user(700), &None, &join)), Err("not_found"));
}

#[test]
fn the_host_or_an_admin_ends_a_stream_once() {
    let by_host = StreamCommand::End { by: user(2), by_admin: false };
    let events = stream::decide(user(700), &live(), &by_host).expect("ended");
    assert_eq!(events.iter().map(Event::type_name).collect::<Vec<_>>(), vec!["stream.ended", "channel.went_offline"]);
    let ended = events.iter().fold(live(), stream::evolve);
    assert_eq!(ended.as_ref().map(|s| s.status), Some(StreamStatus::Ended));
    assert_eq!(events.iter().fold(Some(user(700)), stream::evolve_channel), None);

    let by_other = StreamCommand::End { by: user(3), by_admin: false };
    assert_eq!(codes(stream::decide(user(700), &live(), &by_other)), Err("forbidden"));
    let by_admin = StreamCommand::End { by: user(9), by_admin: true };
    assert!(stream::decide(user(700), &live(), &by_admin).is_ok());
    assert_eq!(codes(stream::decide(user(700), &ended, &by_host)), Err("stream_not_live"));
    assert_eq!(
        codes(stream::decide(user(700), &ended, &StreamCommand::Join { viewer_id: user(3) })),
        Err("stream_not_live")
    );
    assert_eq!(codes(stream::decide(user(700), &ended, &StreamCommand::Leave { viewer_id: user(3) })), Ok(vec![]));
}
