//! The call-detail event model and its deterministic generator.
//!
//! Events are produced in chunks of [`CHUNK_EVENTS`]; each chunk draws from its own generator
//! seeded by `(seed, chunk index)`, so any chunk can be produced on any thread and the output is
//! the same byte for byte. Chunks are a whole number of 20-event type blocks, so the exact type
//! mix holds for every block of 20 consecutive events counted from the first one.

use std::fmt;
use std::sync::LazyLock;

use crate::clock::{self, MICROS_PER_SEC};
use crate::rng::WyRand;
use crate::text::{Cursor, Text, render};

/// A table of [`Text`] values, each checked at compile time.
macro_rules! texts {
    ($($s:literal),* $(,)?) => {
        &[$(Text::new($s)),*]
    };
}

/// Events per chunk: a multiple of the type block (20) and of the API batch limit (100).
pub const CHUNK_EVENTS: u64 = 10_000;

/// Size of the block in which the type mix is exact.
pub const BLOCK_LEN: usize = 20;

/// Default first event time: 2025-01-01T00:00:00Z.
pub const DEFAULT_START_MICROS: i64 = 1_735_689_600 * MICROS_PER_SEC;

/// Default mean spacing between consecutive events (7 ms, about 143 events per second).
pub const DEFAULT_GAP_MICROS: u64 = 7_000;

/// Call-detail event types, with their codes in the source data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    CallOut = 1,
    CallIn = 2,
    Sms = 3,
    DataSession = 5,
}

impl EventType {
    pub const ALL: [EventType; 4] = [EventType::CallOut, EventType::CallIn, EventType::Sms, EventType::DataSession];

    /// Events of each type per block of 20: 15 %, 20 %, 20 %, 45 %.
    pub const fn weight(self) -> usize {
        match self {
            EventType::CallOut => 3,
            EventType::CallIn => 4,
            EventType::Sms => 4,
            EventType::DataSession => 9,
        }
    }

    pub const fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|t| u64::from(t.code()) == code)
    }

    /// The pipeline event `type` used by the `api` and `kinesis-event` formats.
    pub const fn api_name(self) -> &'static str {
        match self {
            EventType::CallOut => "call_out",
            EventType::CallIn => "call_in",
            EventType::Sms => "sms",
            EventType::DataSession => "data_session",
        }
    }
}

/// How many events of each type (in [`EventType::ALL`] order) a block of `n` events holds.
///
/// A full block is exactly 3/4/4/9. A shorter block (only ever the last one) uses the largest
/// remainder method on the exact quotas `n × weight / 20`: every type gets the floor of its
/// quota, and the events left over go to the largest fractional parts; ties go to the type with
/// the larger share, then to the lower type code.
pub fn block_counts(n: usize) -> [usize; 4] {
    let mut counts = [0usize; 4];
    let mut remainders = [(0usize, 0usize, 0usize); 4];
    for (i, t) in EventType::ALL.iter().enumerate() {
        let scaled = n * t.weight();
        counts[i] = scaled / BLOCK_LEN;
        // Sorted descending below: remainder, then weight, then (reversed) position.
        remainders[i] = (scaled % BLOCK_LEN, t.weight(), 3 - i);
    }
    let leftover = n - counts.iter().sum::<usize>();
    let mut order = [0usize, 1, 2, 3];
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]));
    for &i in order.iter().take(leftover) {
        counts[i] += 1;
    }
    counts
}

/// [`block_counts`] of a full block.
const FULL_BLOCK_COUNTS: [usize; 4] =
    [EventType::CallOut.weight(), EventType::CallIn.weight(), EventType::Sms.weight(), EventType::DataSession.weight()];

/// A call-detail event. All text fields are borrowed from static tables or stored inline,
/// so producing one allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct CallEvent {
    pub source: &'static Text,
    /// The UUID v4 as a 128-bit number (version and variant bits already set).
    pub event_ref: u128,
    pub event_type: EventType,
    /// Event time in microseconds since the epoch; formatted to whole seconds.
    pub time_micros: i64,
    pub calling: PhoneNumber,
    pub called: PhoneNumber,
    pub city: &'static Text,
    pub lac: u16,
    pub cell: u16,
    pub duration_seconds: u32,
    pub attrs: Attrs,
}

/// Bytes a data session moved, as pipeline events carry them in `data`.
///
/// They are not a column of the call-detail record, so they are derived from columns it has:
/// the session's duration and the last four digits of its called number, which are random.
/// That way the database forms (CSV, NDJSON) need no column for them, generation draws no
/// extra random number, and integer SQL over a loaded CSV yields the same figures (see the
/// crate README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataVolume {
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl DataVolume {
    /// The downstream rate is this many bytes per second times (1 + d0)(1 + d1)(1 + d2): from
    /// 128 B/s (a mostly idle session) to 128 kB/s (about 1 Mbit/s sustained), 21 kB/s on
    /// average.
    pub const DOWN_RATE_UNIT: u64 = 128;

    /// Upstream is (1 + d3) of this many parts of downstream: 2 % to 20 %, 11 % on average.
    pub const UP_PARTS: u64 = 50;

    /// The volume of a session of `duration_seconds` whose called number's units, tens,
    /// hundreds and thousands digits are d0, d1, d2 and d3. Integer arithmetic only, so SQL
    /// over a loaded CSV gets exactly the same numbers.
    pub fn of_session(duration_seconds: u32, called_number: u64) -> Self {
        let factor = |place: u64| 1 + called_number / place % 10;
        let bytes_down = u64::from(duration_seconds) * Self::DOWN_RATE_UNIT * factor(1) * factor(10) * factor(100);
        // Even for the longest u32 duration, bytes_down × 10 stays below 2^53: exact as a SQLite
        // or PostgreSQL integer and as a JSON number read into a double.
        Self { bytes_up: bytes_down * factor(1000) / Self::UP_PARTS, bytes_down }
    }
}

/// The optional attributes `attr_1` … `attr_8`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Attrs {
    /// attr_1: tariff plan.
    pub plan: Option<&'static Text>,
    /// attr_2: radio access technology.
    pub radio: Option<&'static Text>,
    /// attr_3: device IMEI (15 digits, Luhn check digit included).
    pub imei: Option<Imei>,
    /// attr_4: release cause or delivery status.
    pub cause: Option<&'static Text>,
    /// attr_5: visited network (MCC+MNC) when roaming.
    pub visited_plmn: Option<&'static Text>,
    /// attr_6: trunk group number, written as `TG` and four digits.
    pub trunk: Option<u16>,
    /// attr_7: operator note, 0–5 words from [`NOTE_WORDS`].
    pub note_words: [u8; 5],
    pub note_len: u8,
    /// attr_8: charging id, `len` lowercase hex digits of `value`.
    pub charging_id: Option<(u64, u8)>,
}

pub const ATTR_COUNT: usize = 8;

const CALL_SOURCES: &[Text] =
    texts!["msc-ber-01", "msc-ber-02", "msc-ham-01", "msc-muc-01", "msc-fra-01", "msc-cgn-01", "msc-stu-01",];
const SMS_SOURCES: &[Text] = texts!["smsc-ber-01", "smsc-fra-01", "smsc-muc-01"];
const DATA_SOURCES: &[Text] = texts!["pgw-ber-01", "pgw-fra-01", "pgw-muc-01", "sgsn-ham-01"];

const CITIES: &[Text] = texts![
    "Berlin",
    "Hamburg",
    "München",
    "Köln",
    "Frankfurt am Main",
    "Stuttgart",
    "Düsseldorf",
    "Leipzig",
    "Dortmund",
    "Essen",
    "Bremen",
    "Dresden",
    "Hannover",
    "Nürnberg",
    "Bonn",
    "Münster",
];

const PLANS: &[Text] = texts![
    "prepaid_basic",
    "prepaid_plus",
    "postpaid_s",
    "postpaid_m",
    "postpaid_l",
    "business_flex",
    "business_unlimited",
    "family_share",
    "student",
    "iot_m2m",
];
const RADIOS: &[Text] = texts!["GSM", "UMTS", "LTE", "LTE", "LTE", "NR", "NR"];
const CALL_CAUSES: &[Text] = texts![
    "normal_clearing",
    "normal_clearing",
    "normal_clearing",
    "normal_clearing",
    "normal_clearing",
    "normal_clearing",
    "user_busy",
    "call_rejected",
    "network_out_of_order",
];
const UNANSWERED_CAUSES: &[Text] = texts!["no_answer", "user_busy", "call_rejected", "unallocated_number"];
const SMS_CAUSES: &[Text] = texts!["delivered", "delivered", "delivered", "queued", "absent_subscriber"];
const DATA_CAUSES: &[Text] = texts!["session_end", "idle_timeout", "handover", "quota_exhausted"];
const VISITED_PLMNS: &[Text] =
    texts!["20801", "20810", "23415", "23410", "21401", "22210", "26001", "23201", "310260", "50501",];
/// Type allocation codes of common handsets: the first eight digits of their IMEIs.
const IMEI_TACS: &[Text] =
    texts!["35332411", "35407115", "35925406", "86891203", "35391110", "35290611", "35694108", "35162909",];
pub const NOTE_WORDS: &[Text] = texts![
    "retry", "ok", "late", "dropped", "handover", "weak", "signal", "manual", "check", "vip", "fraud", "review",
    "test", "promo", "billing", "adjusted", "zone", "night", "peak", "port", "in", "out", "sim", "swap", "esim",
    "lost", "found", "credit", "bonus", "cap", "reset", "done",
];

/// An E.164 number range: a fixed prefix (country code and national leading digits) followed
/// by `width` free digits. Numbers are kept as the plan plus the free part, so writing one is
/// a copy of the prefix and at most eight digits of arithmetic.
pub struct NumberPlan {
    prefix: Text,
    base: u64,
    /// Keeps the low `width` bytes of a digit word.
    digit_mask: u64,
    width: u8,
}

const fn plan(prefix: &'static str, width: u32) -> NumberPlan {
    assert!(width >= 1 && width <= 8, "free part must be 1 to 8 digits");
    let prefix = Text::new(prefix);
    NumberPlan {
        prefix,
        base: prefix.digits_value() * 10u64.pow(width),
        digit_mask: u64::MAX >> (8 * (8 - width)),
        width: width as u8,
    }
}

/// Subscribers of the home network: German mobile ranges, 12 or 13 digits in total.
const HOME_PLANS: &[NumberPlan] = &[
    plan("49151", 8),
    plan("49152", 8),
    plan("49160", 7),
    plan("49170", 7),
    plan("49171", 7),
    plan("49176", 8),
    plan("49179", 8),
];

/// Anyone on the other end: home mobiles, German landlines and foreign numbers; 10 to 15
/// digits in total.
const OTHER_PLANS: &[NumberPlan] = &[
    plan("49151", 8),
    plan("49170", 7),
    plan("49176", 8),
    plan("4930", 8),
    plan("4989", 8),
    plan("49221", 8),
    plan("1212", 7),
    plan("1415", 7),
    plan("4479", 8),
    plan("336", 8),
    plan("4366412", 8),
    plan("3546", 6),
    plan("86138", 8),
    plan("38067", 7),
];

/// A phone number: the plan it belongs to and its free digits.
#[derive(Clone, Copy)]
pub struct PhoneNumber {
    plan: &'static NumberPlan,
    /// The free digits, one digit value per byte, first digit in the lowest byte. Keeping
    /// them as digits makes writing a number a single store instead of a conversion.
    digits: u64,
}

impl PhoneNumber {
    pub fn value(&self) -> u64 {
        let rest = (0..self.plan.width).fold(0, |acc, i| acc * 10 + ((self.digits >> (8 * i)) & 0xff));
        self.plan.base + rest
    }

    /// Writes the number's digits, the same text as formatting [`PhoneNumber::value`].
    #[inline(always)]
    pub fn write(&self, out: &mut Cursor<'_>) {
        out.text(&self.plan.prefix);
        out.digit_bytes(self.digits, usize::from(self.plan.width));
    }
}

impl PartialEq for PhoneNumber {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// Eight random decimal digits, one per byte, from 64 random bits: each byte `b` becomes
/// `b × 10 / 256`, for all bytes at once. Digits come out with probability 25/256 or 26/256
/// instead of exactly 1/10, which test data does not mind.
#[inline(always)]
fn random_digits(bits: u64) -> u64 {
    const LOW_BYTES: u64 = 0x00ff_00ff_00ff_00ff;
    let even = (((bits & LOW_BYTES) * 10) >> 8) & 0x000f_000f_000f_000f;
    let odd = (((bits >> 8) & LOW_BYTES) * 10) & 0x0f00_0f00_0f00_0f00;
    even | odd
}

/// A number from the plan that `selector` (a random byte) picks.
#[inline(always)]
fn phone_number(rng: &mut WyRand, plans: &'static [NumberPlan], selector: u64) -> PhoneNumber {
    let plan = &plans[((selector & 0xff) as usize * plans.len()) >> 8];
    PhoneNumber { plan, digits: random_digits(rng.next_u64()) & plan.digit_mask }
}

/// Luhn contribution of the digits of `n` (`digits` long), rightmost first, where every
/// other digit is doubled starting with the rightmost one when `double_first`.
const fn luhn_part(mut n: u64, digits: u32, double_first: bool) -> u8 {
    let mut sum = 0;
    let mut double = double_first;
    let mut i = 0;
    while i < digits {
        let d = n % 10;
        n /= 10;
        sum += if double { d * 2 / 10 + d * 2 % 10 } else { d };
        double = !double;
        i += 1;
    }
    (sum % 10) as u8
}

/// Luhn parts of two-digit groups whose ones digit is doubled. Each pair of the serial sits
/// at an even position from the right of the IMEI body, so one table serves all three.
const LUHN_PAIR: [u8; 100] = {
    let mut table = [0u8; 100];
    let mut n = 0;
    while n < 100 {
        table[n] = luhn_part(n as u64, 2, true);
        n += 1;
    }
    table
};

/// Luhn parts of the type allocation codes, which sit at body positions 6–13.
const TAC_LUHN: [u8; IMEI_TACS.len()] = {
    let mut table = [0u8; IMEI_TACS.len()];
    let mut i = 0;
    while i < IMEI_TACS.len() {
        table[i] = luhn_part(IMEI_TACS[i].digits_value(), 8, true);
        i += 1;
    }
    table
};

/// A 15-digit IMEI: 8-digit type allocation code, then a 6-digit serial and a Luhn check
/// digit (together `tail`).
#[derive(Clone, Copy, PartialEq)]
pub struct Imei {
    tac: u8,
    tail: u32,
}

impl Imei {
    pub fn value(&self) -> u64 {
        IMEI_TACS[usize::from(self.tac)].digits_value() * 10_000_000 + u64::from(self.tail)
    }

    #[inline(always)]
    fn write(&self, out: &mut Cursor<'_>) {
        out.text(&IMEI_TACS[usize::from(self.tac)]);
        out.u64_padded(u64::from(self.tail), 7);
    }
}

impl fmt::Debug for Imei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// An IMEI made from 32 random bits.
#[inline(always)]
fn imei(random: u64) -> Imei {
    let which = ((random & 0xff) as usize * IMEI_TACS.len()) >> 8;
    // Three random two-digit pairs (scaling a byte by 100) make the six-digit serial.
    let pair = |shift: u32| ((((random >> shift) & 0xff) * 100) >> 8) as u32;
    let (p1, p2, p3) = (pair(8), pair(16), pair(24));
    let serial = p1 * 10_000 + p2 * 100 + p3;
    // The body's rightmost digit is doubled (the check digit will sit to its right), as is
    // every other digit leftwards: the ones digit of each serial pair and the TAC's last digit.
    let sum = u32::from(TAC_LUHN[which])
        + u32::from(LUHN_PAIR[p1 as usize])
        + u32::from(LUHN_PAIR[p2 as usize])
        + u32::from(LUHN_PAIR[p3 as usize]);
    Imei { tac: which as u8, tail: serial * 10 + (10 - sum % 10) % 10 }
}

/// Points of the unit-mean exponential distribution's inverse CDF at `i / 1024`, in 1/65536
/// units (the first point moved to `0.25 / 1024`, where the real value is infinite).
/// Interpolating in this table replaces a logarithm per event.
static EXP_INVERSE_CDF: LazyLock<[u32; 1025]> = LazyLock::new(|| {
    let mut table = [0u32; 1025];
    for (i, slot) in table.iter_mut().enumerate() {
        let p = if i == 0 { 0.25 } else { i as f64 } / 1024.0;
        *slot = (-p.ln() * 65_536.0).round() as u32;
    }
    table
});

/// An exponentially distributed duration with the given mean (tail cut at about 8.3 means),
/// capped; `bits` is a random draw.
#[inline(always)]
fn exp_seconds(table: &[u32; 1025], bits: u64, mean: u64, cap: u32) -> u32 {
    let i = (bits >> 54) as usize;
    let frac = (bits >> 38) & 0xffff;
    let (a, b) = (u64::from(table[i]), u64::from(table[i + 1]));
    // The table falls with i, so a >= b.
    let unit = a - (((a - b) * frac) >> 16);
    ((unit * mean) >> 16).min(u64::from(cap)) as u32
}

/// Parameters shared by every chunk of one run.
#[derive(Clone, Copy, Debug)]
pub struct GenConfig {
    pub seed: u64,
    pub count: u64,
    pub start_micros: i64,
    pub gap_micros: u64,
}

impl GenConfig {
    pub fn new(seed: u64, count: u64) -> Self {
        Self { seed, count, start_micros: DEFAULT_START_MICROS, gap_micros: DEFAULT_GAP_MICROS }
    }

    pub fn chunk_count(&self) -> u64 {
        self.count.div_ceil(CHUNK_EVENTS)
    }

    /// The latest event time this configuration can produce.
    pub fn last_time_micros(&self) -> i64 {
        let span = self.count.saturating_mul(self.gap_micros).min(i64::MAX as u64) as i64;
        self.start_micros.saturating_add(span)
    }

    /// An iterator over all events of the run, in order.
    pub fn events(&self) -> Events {
        Events { config: *self, next_chunk: 0, current: None }
    }
}

/// Produces the events of one chunk.
#[derive(Debug, Clone)]
pub struct ChunkGen {
    rng: WyRand,
    exp: &'static [u32; 1025],
    config: GenConfig,
    index: u64,
    end: u64,
    block: [EventType; BLOCK_LEN],
    block_len: usize,
    block_pos: usize,
}

impl ChunkGen {
    pub fn new(config: &GenConfig, chunk: u64) -> Self {
        let start = chunk.saturating_mul(CHUNK_EVENTS).min(config.count);
        let end = start.saturating_add(CHUNK_EVENTS).min(config.count);
        Self {
            rng: WyRand::for_chunk(config.seed, chunk),
            exp: &EXP_INVERSE_CDF,
            config: *config,
            index: start,
            end,
            block: [EventType::DataSession; BLOCK_LEN],
            block_len: 0,
            block_pos: 0,
        }
    }

    /// Global index of the next event.
    pub fn position(&self) -> u64 {
        self.index
    }

    fn refill_block(&mut self) {
        let n = (self.end - self.index).min(BLOCK_LEN as u64) as usize;
        let counts = if n == BLOCK_LEN { FULL_BLOCK_COUNTS } else { block_counts(n) };
        let mut at = 0;
        for (t, c) in EventType::ALL.iter().zip(counts) {
            self.block[at..at + c].fill(*t);
            at += c;
        }
        self.rng.shuffle(&mut self.block[..n]);
        self.block_len = n;
        self.block_pos = 0;
    }

    /// The next event of the chunk, or `None` when the chunk is done.
    #[inline]
    pub fn next_event(&mut self) -> Option<CallEvent> {
        let mut event = CallEvent::EMPTY;
        self.next_into(&mut event).then_some(event)
    }

    /// Overwrites `event` with the next event of the chunk; false when the chunk is done.
    /// Filling a caller's event in place saves copying it on every call.
    #[inline(always)]
    pub fn next_into(&mut self, event: &mut CallEvent) -> bool {
        if self.index >= self.end {
            return false;
        }
        if self.block_pos == self.block_len {
            self.refill_block();
        }
        let event_type = self.block[self.block_pos];
        self.block_pos += 1;
        let index = self.index;
        self.index += 1;
        self.fill(index, event_type, event);
        true
    }

    #[inline(always)]
    fn fill(&mut self, index: u64, event_type: EventType, e: &mut CallEvent) {
        let rng = &mut self.rng;
        let hi = rng.next_u64();
        let lo = rng.next_u64();
        // UUID v4: version nibble 4, variant bits 10.
        let event_ref = (u128::from(hi) << 64 | u128::from(lo)) & !(0xf_u128 << 76) & !(0x3_u128 << 62)
            | (0x4_u128 << 76)
            | (0x2_u128 << 62);
        let gap = self.config.gap_micros;
        let jitter = if gap > 0 { rng.below(gap) } else { 0 };
        let offset = index.saturating_mul(gap).saturating_add(jitter);
        let time_micros = self.config.start_micros.saturating_add(offset.min(i64::MAX as u64) as i64);

        let calls = matches!(event_type, EventType::CallOut | EventType::CallIn);
        let sources = match event_type {
            EventType::CallOut | EventType::CallIn => CALL_SOURCES,
            EventType::Sms => SMS_SOURCES,
            EventType::DataSession => DATA_SOURCES,
        };
        // One draw split into fields keeps the per-event cost down. Scaling a byte by a
        // table length picks an entry without a division.
        let bits = rng.next_u64();
        let source = &sources[((bits >> 40 & 0xff) as usize * sources.len()) >> 8];
        let city = &CITIES[((bits & 0xff) as usize * CITIES.len()) >> 8];
        let lac = 1000 + ((bits >> 8) & 0xffff) as u16 % 64_000;
        let cell = 1 + ((bits >> 24) & 0xffff) as u16 % 65_000;
        let subscriber = phone_number(rng, HOME_PLANS, bits >> 48);
        let other = phone_number(rng, OTHER_PLANS, bits >> 56);
        // The subscriber is the calling party for outgoing events and the called one otherwise.
        let (calling, called) = match event_type {
            EventType::CallIn => (other, subscriber),
            _ => (subscriber, other),
        };

        // Seven-bit chances (out of 128) for each optional part, all from one draw.
        let chances = rng.next_u64();
        let chance = |slot: u32, per_128: u64| (chances >> (7 * slot)) & 0x7f < per_128;
        let length = rng.next_u64();
        let (duration_seconds, answered) = match event_type {
            EventType::CallOut | EventType::CallIn if chance(0, 15) => (0, false),
            EventType::CallOut | EventType::CallIn => (1 + exp_seconds(self.exp, length, 95, 4 * 3600), true),
            EventType::Sms => (0, true),
            EventType::DataSession => (exp_seconds(self.exp, length, 900, 24 * 3600), true),
        };

        let pick = rng.next_u64();
        let choose =
            |slot: u32, table: &'static [Text]| &table[(((pick >> (8 * slot)) & 0xff) as usize * table.len()) >> 8];
        e.source = source;
        e.event_ref = event_ref;
        e.event_type = event_type;
        e.time_micros = time_micros;
        e.calling = calling;
        e.called = called;
        e.city = city;
        e.lac = lac;
        e.cell = cell;
        e.duration_seconds = duration_seconds;
        let attrs = &mut e.attrs;
        *attrs = Attrs::default();
        if !chance(1, 10) {
            attrs.plan = Some(choose(0, PLANS));
        }
        if !chance(2, 5) {
            attrs.radio = Some(choose(1, RADIOS));
        }
        if chance(3, 90) {
            attrs.imei = Some(imei(rng.next_u64()));
        }
        let causes = match event_type {
            EventType::CallOut | EventType::CallIn if answered => CALL_CAUSES,
            EventType::CallOut | EventType::CallIn => UNANSWERED_CAUSES,
            EventType::Sms => SMS_CAUSES,
            EventType::DataSession => DATA_CAUSES,
        };
        if !chance(4, 6) {
            attrs.cause = Some(choose(2, causes));
        }
        if chance(5, 15) {
            attrs.visited_plmn = Some(choose(3, VISITED_PLMNS));
        }
        if calls && chance(6, 77) {
            attrs.trunk = Some(((pick >> 32) & 0xffff) as u16 % 10_000);
        }
        if chance(7, 38) {
            let words = rng.next_u64();
            let n = 1 + (words % 5) as usize;
            for (i, slot) in attrs.note_words.iter_mut().take(n).enumerate() {
                *slot = ((words >> (8 + 8 * i)) as usize % NOTE_WORDS.len()) as u8;
            }
            attrs.note_len = n as u8;
        }
        if chance(8, 96) {
            let len = 8 + ((pick >> 48) & 0xff) as u8 % 9;
            attrs.charging_id = Some((rng.next_u64(), len));
        }
    }
}

/// All events of a run in order, chunk after chunk.
#[derive(Debug, Clone)]
pub struct Events {
    config: GenConfig,
    next_chunk: u64,
    current: Option<ChunkGen>,
}

impl Iterator for Events {
    type Item = CallEvent;

    fn next(&mut self) -> Option<CallEvent> {
        loop {
            if let Some(event) = self.current.as_mut().and_then(ChunkGen::next_event) {
                return Some(event);
            }
            if self.next_chunk >= self.config.chunk_count() {
                return None;
            }
            self.current = Some(ChunkGen::new(&self.config, self.next_chunk));
            self.next_chunk += 1;
        }
    }
}

impl CallEvent {
    /// A placeholder to fill with [`ChunkGen::next_into`].
    pub const EMPTY: CallEvent = CallEvent {
        source: &CALL_SOURCES[0],
        event_ref: 0,
        event_type: EventType::CallOut,
        time_micros: 0,
        calling: PhoneNumber { plan: &HOME_PLANS[0], digits: 0 },
        called: PhoneNumber { plan: &HOME_PLANS[0], digits: 0 },
        city: &CITIES[0],
        lac: 0,
        cell: 0,
        duration_seconds: 0,
        attrs: Attrs {
            plan: None,
            radio: None,
            imei: None,
            cause: None,
            visited_plmn: None,
            trunk: None,
            note_words: [0; 5],
            note_len: 0,
            charging_id: None,
        },
    };

    pub fn calling_number(&self) -> u64 {
        self.calling.value()
    }

    pub fn called_number(&self) -> u64 {
        self.called.value()
    }

    /// The home subscriber the event belongs to: the callee of an incoming call, the calling
    /// party otherwise. Pipeline events carry it as `user_id`.
    pub fn subscriber(&self) -> &PhoneNumber {
        match self.event_type {
            EventType::CallIn => &self.called,
            _ => &self.calling,
        }
    }

    pub fn subscriber_number(&self) -> u64 {
        self.subscriber().value()
    }

    /// The bytes a data session moved; `None` for calls and SMS.
    pub fn data_volume(&self) -> Option<DataVolume> {
        (self.event_type == EventType::DataSession)
            .then(|| DataVolume::of_session(self.duration_seconds, self.called_number()))
    }

    /// Whole seconds of the event time.
    pub fn time_secs(&self) -> i64 {
        self.time_micros.div_euclid(MICROS_PER_SEC)
    }

    /// `event_date` as RFC 3339 text.
    pub fn event_date(&self) -> String {
        String::from_utf8_lossy(&clock::format_secs(self.time_secs())).into_owned()
    }

    /// `event_ref` as the usual hyphenated lowercase UUID text.
    pub fn event_ref_text(&self) -> String {
        render(|c| c.uuid(self.event_ref))
    }

    /// `location` text: city, location area code and cell id.
    pub fn location(&self) -> String {
        render(|c| self.write_location(c))
    }

    #[inline(always)]
    pub fn write_location(&self, out: &mut Cursor<'_>) {
        out.text(self.city);
        out.byte(b'/');
        out.u64(u64::from(self.lac));
        out.byte(b'-');
        out.u64(u64::from(self.cell));
    }

    /// Writes `attr_{n}` (1-based) and reports whether it has a value. Like every text
    /// field, none of the values can need CSV quoting or JSON escaping.
    #[inline(always)]
    pub fn write_attr(&self, n: usize, out: &mut Cursor<'_>) -> bool {
        let a = &self.attrs;
        match n {
            1 | 2 | 4 | 5 => {
                let text = match n {
                    1 => a.plan,
                    2 => a.radio,
                    4 => a.cause,
                    _ => a.visited_plmn,
                };
                // An absent text is written as the empty text: one copy, no branch.
                out.text(text.unwrap_or(&Text::EMPTY));
                text.is_some()
            }
            3 => a.imei.is_some_and(|v| {
                v.write(out);
                true
            }),
            6 => a.trunk.is_some_and(|v| {
                out.array(b"TG");
                out.u64_padded(u64::from(v), 4);
                true
            }),
            7 => {
                let words = &a.note_words[..usize::from(a.note_len).min(5)];
                for (i, w) in words.iter().enumerate() {
                    if i > 0 {
                        out.byte(b' ');
                    }
                    out.text(&NOTE_WORDS[usize::from(*w) % NOTE_WORDS.len()]);
                }
                !words.is_empty()
            }
            _ => a.charging_id.is_some_and(|(v, len)| {
                out.hex(v, usize::from(len));
                true
            }),
        }
    }

    /// `attr_{n}` (1-based) as an owned string, `None` when empty.
    pub fn attr(&self, n: usize) -> Option<String> {
        let mut present = false;
        let text = render(|c| present = self.write_attr(n, c));
        present.then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn config(seed: u64, count: u64) -> GenConfig {
        GenConfig::new(seed, count)
    }

    #[test]
    fn full_block_is_exactly_3_4_4_9() {
        assert_eq!(block_counts(20), [3, 4, 4, 9]);
    }

    #[test]
    fn partial_blocks_follow_largest_remainder_with_documented_ties() {
        // Worked by hand from the quotas n × (3, 4, 4, 9) / 20.
        assert_eq!(block_counts(1), [0, 0, 0, 1]);
        assert_eq!(block_counts(2), [0, 1, 0, 1]); // 2 beats 3 on the code tie-break
        assert_eq!(block_counts(4), [0, 1, 1, 2]);
        assert_eq!(block_counts(10), [1, 2, 2, 5]); // 5 beats 1 on the share tie-break
        assert_eq!(block_counts(19), [3, 4, 4, 8]);
        for n in 0..=BLOCK_LEN {
            let got = block_counts(n);
            assert_eq!(got.iter().sum::<usize>(), n);
            let mut min_up = usize::MAX;
            let mut max_down = 0;
            for (t, c) in EventType::ALL.iter().zip(got) {
                let scaled = n * t.weight();
                let floor = scaled / BLOCK_LEN;
                assert!(c == floor || c == floor + 1, "n={n} {t:?} got {c}");
                let remainder = scaled % BLOCK_LEN;
                if c > floor {
                    min_up = min_up.min(remainder);
                } else {
                    max_down = max_down.max(remainder);
                }
            }
            if min_up != usize::MAX {
                assert!(min_up >= max_down, "n={n}: a smaller remainder was rounded up");
            }
        }
    }

    #[test]
    fn every_block_of_20_has_exact_type_mix() {
        let count = 1_000_000 + 13;
        let mut block = [0usize; 4];
        let mut seen = 0usize;
        let mut total = [0usize; 4];
        let mut first_block = Vec::new();
        let mut gens: Vec<ChunkGen> =
            (0..config(42, count).chunk_count()).map(|c| ChunkGen::new(&config(42, count), c)).collect();
        for generator in &mut gens {
            while let Some(e) = generator.next_event() {
                let slot = EventType::ALL.iter().position(|t| *t == e.event_type).unwrap_or(9);
                block[slot] += 1;
                total[slot] += 1;
                seen += 1;
                if seen <= 20 {
                    first_block.push(e.event_type);
                }
                if seen.is_multiple_of(20) {
                    assert_eq!(block, [3, 4, 4, 9], "block ending at event {seen}");
                    block = [0; 4];
                }
            }
        }
        assert_eq!(seen as u64, count);
        assert_eq!(block, block_counts(13), "last partial block");
        assert_eq!(total, [150_002, 200_003, 200_002, 450_006]);
        // Shuffled, not sorted by type.
        let mut sorted = first_block.clone();
        sorted.sort();
        assert_ne!(first_block, sorted);
    }

    #[test]
    fn events_iterator_matches_chunk_generators() {
        let cfg = config(9, 25_000);
        let via_iter: Vec<CallEvent> = cfg.events().collect();
        let mut via_chunks = Vec::new();
        for c in 0..cfg.chunk_count() {
            let mut g = ChunkGen::new(&cfg, c);
            while let Some(e) = g.next_event() {
                via_chunks.push(e);
            }
        }
        assert_eq!(via_iter.len(), 25_000);
        assert_eq!(via_iter, via_chunks);
    }

    #[test]
    fn a_prefix_does_not_depend_on_the_total_count() {
        let short: Vec<CallEvent> = config(5, 40).events().collect();
        let long: Vec<CallEvent> = config(5, 20_000).events().take(40).collect();
        assert_eq!(short, long);
    }

    #[test]
    fn event_refs_are_uuid_v4_and_unique() {
        let refs: Vec<String> = config(1, 5000).events().map(|e| e.event_ref_text()).collect();
        let unique: std::collections::HashSet<&String> = refs.iter().collect();
        assert_eq!(unique.len(), refs.len());
        for r in &refs {
            let b = r.as_bytes();
            assert_eq!(b.len(), 36);
            assert_eq!(b[14], b'4', "{r}");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "{r}");
        }
    }

    #[test]
    fn phone_numbers_have_10_to_15_digits() {
        let mut lengths = HashMap::new();
        for e in config(2, 20_000).events() {
            for n in [e.calling_number(), e.called_number()] {
                let len = n.to_string().len();
                assert!((10..=15).contains(&len), "{n}");
                *lengths.entry(len).or_insert(0) += 1;
            }
        }
        assert!(lengths.len() >= 4, "lengths vary: {lengths:?}");
    }

    #[test]
    fn numbers_are_written_as_their_values() {
        for e in config(13, 5000).events() {
            assert_eq!(render(|c| e.calling.write(c)), e.calling_number().to_string());
            assert_eq!(render(|c| e.called.write(c)), e.called_number().to_string());
            if let Some(imei) = e.attrs.imei {
                assert_eq!(e.attr(3), Some(imei.value().to_string()));
            }
        }
    }

    #[test]
    fn imeis_pass_the_luhn_check() {
        let mut rng = WyRand::new(11);
        for _ in 0..1000 {
            let v = imei(rng.next_u64()).value();
            let digits: Vec<u64> = v.to_string().bytes().map(|b| u64::from(b - b'0')).collect();
            assert_eq!(digits.len(), 15);
            let sum: u64 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(i, d)| if i % 2 == 1 { (d * 2) / 10 + (d * 2) % 10 } else { *d })
                .sum();
            assert_eq!(sum % 10, 0, "{v}");
        }
    }

    #[test]
    fn times_increase_with_the_index_and_stay_within_their_slot() {
        let cfg = config(3, 30_000);
        let mut previous = i64::MIN;
        for (i, e) in cfg.events().enumerate() {
            let slot = cfg.start_micros + i as i64 * cfg.gap_micros as i64;
            assert!(e.time_micros >= slot && e.time_micros < slot + cfg.gap_micros as i64);
            assert!(e.time_micros > previous);
            previous = e.time_micros;
        }
    }

    #[test]
    fn durations_are_zero_for_sms_and_vary_for_calls_and_data() {
        let mut call_durations = std::collections::HashSet::new();
        let mut zero_calls = 0;
        for e in config(4, 20_000).events() {
            match e.event_type {
                EventType::Sms => assert_eq!(e.duration_seconds, 0),
                EventType::CallOut | EventType::CallIn => {
                    call_durations.insert(e.duration_seconds);
                    zero_calls += usize::from(e.duration_seconds == 0);
                }
                EventType::DataSession => assert!(e.duration_seconds <= 24 * 3600),
            }
        }
        assert!(call_durations.len() > 100);
        assert!(zero_calls > 0);
    }

    #[test]
    fn every_attribute_is_sometimes_empty_and_sometimes_set() {
        let events: Vec<CallEvent> = config(6, 20_000).events().collect();
        for n in 1..=ATTR_COUNT {
            let values: Vec<Option<String>> = events.iter().map(|e| e.attr(n)).collect();
            assert!(values.iter().any(Option::is_none), "attr_{n} never empty");
            let distinct: std::collections::HashSet<&String> = values.iter().flatten().collect();
            assert!(distinct.len() > 1, "attr_{n} constant");
            let lengths: std::collections::HashSet<usize> =
                values.iter().map(|v| v.as_ref().map_or(0, String::len)).collect();
            assert!(lengths.len() > 1, "attr_{n} lengths never vary");
        }
    }

    #[test]
    fn subscriber_is_the_callee_of_incoming_calls_and_the_caller_otherwise() {
        let mut seen = HashSet::new();
        for e in config(14, 2_000).events() {
            let expected = if e.event_type == EventType::CallIn { e.called_number() } else { e.calling_number() };
            assert_eq!(e.subscriber_number(), expected, "{e:?}");
            // Always a home subscriber: a German mobile number.
            assert!(
                HOME_PLANS.iter().any(|p| p.prefix.digits_value() == e.subscriber_number() / 10u64.pow(p.width.into()))
            );
            seen.insert(e.event_type);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn data_volume_follows_the_documented_formula() {
        // Digits 8, 7, 6 make 128 × 9 × 8 × 7 = 64 512 B/s; digit 5 makes upstream 6/50 of it.
        let volume = DataVolume::of_session(100, 4930_1234_5678);
        assert_eq!(volume, DataVolume { bytes_up: 774_144, bytes_down: 6_451_200 });
        // The slowest rate, and upstream rounded down: 128 × 1 / 50 = 2.56.
        assert_eq!(DataVolume::of_session(1, 4930_1234_0000), DataVolume { bytes_up: 2, bytes_down: 128 });
        assert_eq!(DataVolume::of_session(0, 4930_1234_9999), DataVolume { bytes_up: 0, bytes_down: 0 });
        let longest = DataVolume::of_session(24 * 3600, 4930_1234_9999);
        assert_eq!(longest.bytes_down, 24 * 3600 * 128_000);
        assert_eq!(longest.bytes_up, longest.bytes_down / 5);
    }

    #[test]
    fn only_data_sessions_have_a_volume_at_realistic_rates() {
        let (mut bytes_down, mut bytes_up, mut seconds) = (0u64, 0u64, 0u64);
        for e in config(15, 20_000).events() {
            let volume = e.data_volume();
            assert_eq!(volume.is_some(), e.event_type == EventType::DataSession, "{e:?}");
            let Some(volume) = volume else { continue };
            let duration = u64::from(e.duration_seconds);
            assert!((128 * duration..=128_000 * duration).contains(&volume.bytes_down), "{e:?}: {volume:?}");
            assert!((volume.bytes_down / 50..=volume.bytes_down / 5).contains(&volume.bytes_up), "{volume:?}");
            bytes_down += volume.bytes_down;
            bytes_up += volume.bytes_up;
            seconds += duration;
        }
        // About 21 kB/s downstream and 11 % of that upstream over all sessions.
        let rate = bytes_down / seconds;
        assert!((17_000..=26_000).contains(&rate), "{rate} B/s");
        let up_percent = bytes_up * 100 / bytes_down;
        assert!((9..=13).contains(&up_percent), "{up_percent} %");
    }

    #[test]
    fn api_names_map_every_code() {
        let names: Vec<(u8, &str)> = EventType::ALL.iter().map(|t| (t.code(), t.api_name())).collect();
        assert_eq!(names, [(1, "call_out"), (2, "call_in"), (3, "sms"), (5, "data_session")]);
        assert_eq!(EventType::from_code(5), Some(EventType::DataSession));
        assert_eq!(EventType::from_code(4), None);
    }
}
