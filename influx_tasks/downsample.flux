// Sunbox downsampling: one InfluxDB task per tier, rendered from this template by
// `sunbox influx apply` (collector/src/sunbox/storage/layout.py fills the $${name} slots
// from the tier list in the storage layout; the inventory owns that list).
//
// Every tier is computed from the raw bucket, not from the tier below it: a mean of
// means is only exact when every window holds the same number of points, and gaps make
// that false. Raw is kept longer than the catch-up limit plus the widest window, so
// each tier can still be computed from raw after a downtime of up to the catch-up limit.
//
// The task runs at the tier's `run_every` (by default longer than the window for the fine
// tiers: fewer runs, fewer synced writes on the card); each run fills every window since.
// No `offset`: each run works out its own range. It starts one window before the newest
// window this tier has already written (both are recomputed: they may have been written
// from partial data while a backlog was draining into raw), or at the catch-up limit
// when the tier is empty or further behind, and stops at the last complete window
// before now(). Windows missed
// while InfluxDB or the Pi was down are therefore filled by the next run. Results are
// stamped with the window's start; rerunning a window rewrites the same points.
//
// Aggregates, by field name (the writer guarantees each name's type, see
// collector/src/sunbox/storage/points.py):
//   flag fields (int bitmasks)                      bitwise OR of every value in the window
//   states, counters, constants, booleans, text    last value in the window (name unchanged)
//   every other field (a measured float)            mean (name unchanged), <name>_min, <name>_max
// The filters compare names only, so InfluxDB can push the range, the filter and the
// mean/min/max/last/count windows down into its storage engine instead of streaming
// every raw value through Flux.
// Each window that had raw data also gets a marker point, measurement sunbox_tier,
// field raw_values = number of raw field values aggregated: it records how far the
// tier has got and shows data gaps on the Health dashboard.
import "date"
import "experimental/bitwise"

option task = {name: "${task_name}", every: ${run_every}}

period = ${every}
source = "${source_bucket}"
destination = "${destination_bucket}"
catchup = ${catchup}

stop = date.truncate(t: now(), unit: period)
floor = date.truncate(t: date.sub(d: catchup, from: stop), unit: period)
progress =
    from(bucket: destination)
        |> range(start: floor, stop: stop)
        |> filter(fn: (r) => r._measurement == "sunbox_tier" and r._field == "raw_values")
        |> last()
        |> findRecord(fn: (key) => true, idx: 0)
resume = if exists progress._time then date.sub(d: period, from: progress._time) else floor
start = if resume < floor then floor else resume

windowed = (fn, predicate) =>
    from(bucket: source)
        |> range(start: start, stop: stop)
        |> filter(fn: predicate)
        |> aggregateWindow(every: period, fn: fn, timeSrc: "_start", createEmpty: false)

renamed = (tables=<-, suffix) => tables |> map(fn: (r) => ({r with _field: r._field + suffix}))

isMeasured = (r) => ${measured_predicate}
isLast = (r) => ${last_predicate}
isFlag = (r) => ${flag_predicate}

windowed(fn: mean, predicate: isMeasured) |> to(bucket: destination)
windowed(fn: min, predicate: isMeasured) |> renamed(suffix: "_min") |> to(bucket: destination)
windowed(fn: max, predicate: isMeasured) |> renamed(suffix: "_max") |> to(bucket: destination)
windowed(fn: last, predicate: isLast) |> to(bucket: destination)

windowed(
    predicate: isFlag,
    fn: (column, tables=<-) =>
        tables
            |> reduce(
                identity: {_value: 0},
                fn: (r, accumulator) => ({_value: bitwise.sor(a: accumulator._value, b: r._value)}),
            ),
)
    |> to(bucket: destination)

windowed(fn: count, predicate: (r) => true)
    |> group(columns: ["_time"])
    |> sum()
    |> map(fn: (r) => ({_time: r._time, _measurement: "sunbox_tier", _field: "raw_values", _value: r._value}))
    |> to(bucket: destination)
