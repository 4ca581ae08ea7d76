using System.Diagnostics;
using System.Diagnostics.Metrics;
using AttributionFleet.Contracts.V1;

namespace AttributionFleet.Worker.Telemetry;

/// <summary>
/// The fleet's instruments (meter <see cref="MeterName"/>), with low-cardinality attributes only: model, method,
/// softmax_rule, precision, device, outcome, reason. No job or text ids (those go to logs and traces).
/// Prometheus names (OpenTelemetry exporter): dots become underscores, units become suffixes (<c>_seconds</c>,
/// <c>_bytes</c>), counters end in <c>_total</c>.
/// </summary>
public sealed class FleetMetrics
{
    public const string MeterName = "AttributionFleet.Worker";
    public const string WorkerSourceName = "AttributionFleet.Worker";

    /// <summary>Powers of ten 1e-12 … 1e3: resolves rounding-level deltas (float64 ~1e-14, float32 ~1e-7) and broken ones.</summary>
    public static readonly IReadOnlyList<double> DeltaBuckets = Enumerable.Range(-12, 16).Select(e => Math.Pow(10, e)).ToArray();
    /// <summary>1 ms … 20 min.</summary>
    public static readonly IReadOnlyList<double> SecondsBuckets =
        new[] { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200 };

    /// <summary>Traces of the worker's own steps (the consume spans are MassTransit's).</summary>
    public static readonly ActivitySource WorkerSource = new(WorkerSourceName);

    private readonly Histogram<double> _relativeDelta, _absoluteDelta, _batchDuration, _queueWait, _batchLatency, _jobDuration, _modelLoad;
    private readonly Counter<long> _texts, _overThreshold, _tokens, _jobs, _jobFailures;
    private readonly UpDownCounter<long> _inFlight;
    private Func<IEnumerable<(string Model, string Device, long Bytes)>>? _modelMemory;

    public FleetMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(MeterName);
        Meter = meter;
        _relativeDelta = meter.CreateHistogram("attribution.delta.relative", "1",
            "|delta| / |f(x) − f(x0)| per explained text", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DeltaBuckets });
        _absoluteDelta = meter.CreateHistogram("attribution.delta.absolute", "{output}",
            "|delta| = |sum of scores − (f(x) − f(x0))| per explained text, in units of the explained output", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DeltaBuckets });
        _texts = meter.CreateCounter<long>("attribution.texts.processed", "{text}", "Texts explained");
        _overThreshold = meter.CreateCounter<long>("attribution.texts.over_threshold", "{text}", "Texts whose delta exceeded the threshold");
        _tokens = meter.CreateCounter<long>("attribution.tokens.processed", "{token}", "Tokens explained");
        _batchDuration = meter.CreateHistogram("attribution.batch.duration", "s", "Engine time of one batch",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _queueWait = meter.CreateHistogram("attribution.batch.queue_wait", "s", "Time a batch waited in the queue",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _batchLatency = meter.CreateHistogram("attribution.batch.latency", "s", "From job submission to this batch's results sent (the last batch's is the job's latency)",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _jobDuration = meter.CreateHistogram("attribution.job.duration", "s", "Job end to end, submission to last batch collected (recorded by the collector)",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _jobs = meter.CreateCounter<long>("attribution.jobs", "{job}", "Jobs taken from the job queue, by outcome (accepted, rejected)");
        _jobFailures = meter.CreateCounter<long>("attribution.job.failures", "{job}", "Failed jobs by reason");
        _inFlight = meter.CreateUpDownCounter<long>("attribution.batches.in_flight", "{batch}", "Batches being explained now");
        _modelLoad = meter.CreateHistogram("attribution.model.load.duration", "s", "Time to load a model",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        meter.CreateObservableGauge("attribution.model.memory", ObserveModelMemory, "By", "Weight bytes of each loaded model");
        _faithfulness = meter.CreateHistogram("attribution.faithfulness", "1",
            "Faithfulness per explained text, by metric (comprehensiveness, sufficiency, aopc_deletion, aopc_insertion): changes of the class's probability",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = FaithfulnessBuckets });
        _weakReference = meter.CreateCounter<long>("attribution.texts.weak_reference", "{text}", "Texts whose |p(x) − p(x0)| was below the weak-reference threshold");
    }

    private readonly Histogram<double> _faithfulness;
    private readonly Counter<long> _weakReference;
    private static readonly double[] FaithfulnessBuckets = { -0.5, -0.2, -0.1, -0.05, 0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1 };

    /// <summary>One text's faithfulness figures (when the job asked for them) and its weak-reference flag.</summary>
    public void TextChecked(in TextTags tags, Contracts.V1.TextAttribution result)
    {
        var t = tags.ToTagList();
        // Added for every checked text (0 when not weak), so the weak-reference share has a series from the first text on.
        if (result.WeakReference is { } weak) _weakReference.Add(weak ? 1 : 0, t);
        if (result.Faithfulness is not { } f) return;
        foreach (var (metric, value) in new[] { ("comprehensiveness", f.ComprehensivenessMean), ("sufficiency", f.SufficiencyMean), ("aopc_deletion", f.AopcDeletion), ("aopc_insertion", f.AopcInsertion) })
        {
            if (!double.IsFinite(value)) continue;
            var withMetric = t;
            withMetric.Add("metric", metric);
            _faithfulness.Record(value, withMetric);
        }
    }

    public Meter Meter { get; }

    /// <summary>Low-cardinality attributes of explained texts.</summary>
    public readonly record struct TextTags(string Model, string Method, string SoftmaxRule, string Precision, string Device)
    {
        public TagList ToTagList()
        {
            var tags = new TagList { { "model", Model }, { "method", Method }, { "softmax_rule", SoftmaxRule }, { "precision", Precision }, { "device", Device } };
            return tags;
        }
    }

    public void TextExplained(in TextTags tags, double absoluteDelta, double relativeDelta, int tokens, bool overThreshold)
    {
        var t = tags.ToTagList();
        _texts.Add(1, t);
        _tokens.Add(tokens, t);
        // NaN falls in no bucket; count it in +Inf (it is certainly not small).
        _absoluteDelta.Record(double.IsNaN(absoluteDelta) ? double.PositiveInfinity : Math.Abs(absoluteDelta), t);
        _relativeDelta.Record(double.IsNaN(relativeDelta) ? double.PositiveInfinity : Math.Abs(relativeDelta), t);
        if (overThreshold) _overThreshold.Add(1, t);
    }

    public void BatchDone(in TextTags tags, string outcome, TimeSpan duration)
    {
        var t = tags.ToTagList();
        t.Add("outcome", outcome);
        _batchDuration.Record(duration.TotalSeconds, t);
    }

    public void BatchQueued(string model, TimeSpan wait) => _queueWait.Record(wait.TotalSeconds, new KeyValuePair<string, object?>("model", model));

    public void BatchLatency(string model, TimeSpan sinceSubmission) =>
        _batchLatency.Record(sinceSubmission.TotalSeconds, new KeyValuePair<string, object?>("model", model));

    public IDisposable InFlight(string model)
    {
        var tag = new KeyValuePair<string, object?>("model", model);
        _inFlight.Add(1, tag);
        return new Decrement(_inFlight, tag);
    }

    private sealed class Decrement(UpDownCounter<long> counter, KeyValuePair<string, object?> tag) : IDisposable
    {
        private int _done;
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) counter.Add(-1, tag);
        }
    }

    public void JobTaken(string model, string outcome) =>
        _jobs.Add(1, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("outcome", outcome));

    public void JobFailed(string model, string reason) =>
        _jobFailures.Add(1, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("reason", reason));

    public void JobFinished(string model, string outcome, TimeSpan duration) =>
        _jobDuration.Record(duration.TotalSeconds, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("outcome", outcome));

    public void ModelLoaded(string model, string device, TimeSpan duration) =>
        _modelLoad.Record(duration.TotalSeconds, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("device", device));

    /// <summary>Where <c>attribution.model.memory</c> reads the loaded models from (the registry).</summary>
    public void ObserveModels(Func<IEnumerable<(string Model, string Device, long Bytes)>> loaded) => _modelMemory = loaded;

    private IEnumerable<Measurement<long>> ObserveModelMemory() =>
        (_modelMemory?.Invoke() ?? Enumerable.Empty<(string, string, long)>())
        .Select(m => new Measurement<long>(m.Bytes, new KeyValuePair<string, object?>("model", m.Model), new KeyValuePair<string, object?>("device", m.Device)))
        .ToList();

    /// <summary>Model ids are configuration, but a job may name any string: unknown ids are reported as <c>unknown</c>.</summary>
    public static string ModelTag(string? modelId, IReadOnlyCollection<string> configured) =>
        modelId is not null && configured.Contains(modelId, StringComparer.OrdinalIgnoreCase) ? modelId : "unknown";

    public static string FailureReason(string reason) => reason switch
    {
        FailureReasons.UnknownModel or FailureReasons.InvalidRequest or FailureReasons.LimitExceeded
            or FailureReasons.ModelLoadFailed or FailureReasons.EngineError => reason,
        _ => "other",
    };
}
