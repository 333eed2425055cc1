//! `ironclaw mcp`: an assistant starts it and speaks MCP on its stdin and stdout. It opens the
//! daemon's MCP stream (`/mcp/stream`, upgraded) and copies bytes both ways; the daemon's one
//! MCP handler answers, and sees this process's credentials on the socket. Nothing else is ever
//! written to stdout, so a refusal or a lost daemon is told on stderr and in the exit status.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use hyper_util::rt::TokioIo;
use ironclaw_daemon::mcp::STREAM_PROTOCOL;
use tokio::io::AsyncWriteExt;

use crate::args::{EXIT_FAILURE, EXIT_UNREACHABLE};
use crate::client::Client;

pub async fn mcp(client: &Client) -> ExitCode {
    let upgraded = match client.upgrade("/mcp/stream", STREAM_PROTOCOL).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(refused)) => {
            let message = refused.body["error"]["message"].as_str().map(String::from);
            let message = message.unwrap_or_else(|| refused.body.to_string());
            eprintln!("ironclaw mcp: the daemon refused the MCP stream (HTTP {}): {message}", refused.status.as_u16());
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            eprintln!("ironclaw mcp: {}", ironclaw_protocol::error_chain(&e));
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let (mut from_daemon, mut to_daemon) = tokio::io::split(TokioIo::new(upgraded));
    let requests = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut to_daemon).await?;
        // The assistant closed our stdin: the session is over once the daemon has answered.
        to_daemon.shutdown().await
    };
    let answers = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut from_daemon, &mut stdout).await?;
        stdout.flush().await
    };
    // The daemon ending the stream ends the relay, whatever stdin does; stdin ending lets the
    // daemon's last answers through first.
    tokio::pin!(answers);
    let ended = tokio::select! {
        answered = &mut answers => answered,
        sent = requests => match sent {
            Ok(()) => answers.await,
            Err(e) => Err(e),
        },
    };
    match ended {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironclaw mcp: the stream to the daemon broke: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}
