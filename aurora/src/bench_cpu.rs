//! The CPU a bench's run costs on this machine, beside its figures: this process (its librdkafka
//! threads apart), the broker, Postgres and Redis, read from `/proc` at the start and the end of
//! the run. Each server is found by its process name (`tansu`, `postgres`, `redis-server`), so
//! another instance of one on the machine counts too. Linux only; elsewhere nothing is read.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

/// Clock ticks a second in `/proc/<pid>/stat`: Linux reports CPU time in `USER_HZ`, which is 100
/// on every architecture it exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Who used the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum User {
    Aurora,
    Librdkafka,
    Broker,
    Postgres,
    Redis,
}

/// CPU ticks used so far, by user.
type Ticks = HashMap<User, u64>;

/// A reading taken when a run starts.
pub struct CpuUse {
    at: Instant,
    before: Ticks,
}

impl CpuUse {
    /// Reads the CPU used so far; `None` where there is no `/proc`.
    pub fn start() -> Option<Self> {
        let before = ticks()?;
        Some(Self { at: Instant::now(), before })
    }

    /// What was used since [`CpuUse::start`], in cores (1.0: one core all the time).
    pub fn report(&self) -> Option<String> {
        let after = ticks()?;
        let seconds = self.at.elapsed().as_secs_f64();
        let cores = |user: User| {
            let used = after.get(&user).unwrap_or(&0).saturating_sub(*self.before.get(&user).unwrap_or(&0));
            used as f64 / TICKS_PER_SECOND / seconds
        };
        let total: f64 = [User::Aurora, User::Librdkafka, User::Broker, User::Postgres, User::Redis].into_iter().map(cores).sum();
        Some(format!(
            "aurora {:.2} (librdkafka {:.2} of it), broker {:.2}, Postgres {:.2}, Redis {:.2}; {total:.2} in all, of {} cores",
            cores(User::Aurora) + cores(User::Librdkafka),
            cores(User::Librdkafka),
            cores(User::Broker),
            cores(User::Postgres),
            cores(User::Redis),
            std::thread::available_parallelism().map_or(1, usize::from),
        ))
    }
}

/// The process name and user plus system ticks of a `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // The name is in parentheses and may hold spaces or parentheses itself.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let (user, system) = (fields.get(11)?.parse::<u64>().ok()?, fields.get(12)?.parse::<u64>().ok()?);
    Some((name, user + system))
}

fn ticks() -> Option<Ticks> {
    let mut ticks = Ticks::new();
    let own_pid = std::process::id().to_string();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid.to_str().filter(|name| name.bytes().all(|byte| byte.is_ascii_digit())) else { continue };
        if pid == own_pid {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((name, used)) = parse_stat(&stat) else { continue };
        let user = match name {
            "tansu" => User::Broker,
            "postgres" => User::Postgres,
            "redis-server" => User::Redis,
            _ => continue,
        };
        *ticks.entry(user).or_default() += used;
    }
    // This process as a whole (threads that ended, such as the blocking pool's, count there too),
    // and librdkafka's threads (`rdk:...`) among those still running.
    let (_, own) = parse_stat(&fs::read_to_string("/proc/self/stat").ok()?)?;
    let mut librdkafka = 0;
    for entry in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((_, used)) = parse_stat(&stat).filter(|(name, _)| name.starts_with("rdk:")) {
            librdkafka += used;
        }
    }
    ticks.insert(User::Librdkafka, librdkafka);
    ticks.insert(User::Aurora, own.saturating_sub(librdkafka));
    Some(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_ticks_even_with_odd_names() {
        let line = "4242 (rdk:main (x)) S 1 4242 4242 0 -1 4194560 120 0 0 0 37 5 0 0 20 0 9 0 12345 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("rdk:main (x)", 42)));
        assert_eq!(parse_stat("garbage"), None);
        let own = ticks().expect("this process's threads are readable");
        assert!(own.contains_key(&User::Aurora));
    }
}
