//! A chat client over the real WebSocket, as the web UI would be.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::{http, Caller};

pub const FRAME_WAIT: Duration = Duration::from_secs(30);

pub struct ChatSocket {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    /// Every frame received so far, in order.
    pub frames: Vec<Value>,
    pub hello: Value,
}

impl ChatSocket {
    /// Gets a ticket as `caller` and opens the socket.
    pub async fn open(base_url: &str, caller: &Caller) -> Self {
        let ticket: Value = caller.apply(http().post(format!("{base_url}/v1/auth/ws-ticket"))).send().await.unwrap().json().await.unwrap();
        Self::open_with_ticket(base_url, ticket["ticket"].as_str().unwrap()).await
    }

    /// Gets a ticket with the API token `token` and opens the socket.
    pub async fn open_with_token(base_url: &str, token: &str) -> Self {
        let ticket: Value =
            http().post(format!("{base_url}/v1/auth/ws-ticket")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        Self::open_with_ticket(base_url, ticket["ticket"].as_str().expect("a ticket")).await
    }

    async fn open_with_ticket(base_url: &str, ticket: &str) -> Self {
        let url = format!("{}/ws?ticket={ticket}", base_url.replacen("http://", "ws://", 1));
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket handshake");
        let hello = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        Self { socket, frames: Vec::new(), hello }
    }

    /// Reads until the server closes the socket; returns its close code, or `None` if it is
    /// still open after `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()?;
            match next {
                Some(Ok(Message::Close(frame))) => return Some(frame.map(|frame| u16::from(frame.code)).unwrap_or(1005)),
                Some(Ok(Message::Text(text))) => {
                    if let Ok(frame) = serde_json::from_str::<Value>(&text) {
                        self.frames.push(frame);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Some(1006),
            }
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.socket.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// Sends `frame` with a fresh `request_id` and waits for the answer that carries it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let request_id = Uuid::now_v7().to_string();
        frame["request_id"] = json!(request_id);
        self.send_raw(&frame.to_string()).await;
        self.until(&format!("the answer to {frame}"), |received| received["request_id"] == request_id.as_str()).await
    }

    /// Reads frames until one satisfies `matches`, and returns it.
    pub async fn until(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; frames so far: {:#?}", self.frames));
            let message = next.expect("socket open").expect("socket healthy");
            let Ok(text) = message.to_text() else { continue };
            if text.is_empty() {
                continue;
            }
            let frame: Value = serde_json::from_str(text).unwrap();
            self.frames.push(frame.clone());
            if matches(&frame) {
                return frame;
            }
        }
    }

    /// Reads frames until the event of type `event_type` arrives.
    pub async fn event(&mut self, event_type: &str) -> Value {
        self.until(event_type, |frame| frame["type"] == event_type).await
    }

    /// The text of every delta received for `turn_id`, in order.
    pub fn streamed_text(&self, turn_id: &str) -> String {
        self.frames
            .iter()
            .filter(|frame| frame["type"] == "delta" && frame["turn_id"] == turn_id)
            .map(|frame| frame["text"].as_str().unwrap_or_default())
            .collect()
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
