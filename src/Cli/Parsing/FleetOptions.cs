using System.CommandLine;
using System.CommandLine.Parsing;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Parsing;

/// <summary>
/// Every option of the CLI, defined once: <c>explain</c>, <c>submit</c> and <c>predict</c> add the same instances, so a
/// flag has one name, one type, one validator, one description and one default everywhere. One instance per command
/// tree (System.CommandLine records each option's parents; a tree is built per parse).
/// </summary>
public sealed class FleetOptions
{
    // Texts
    public readonly Argument<string[]> Texts = new("text")
    {
        Description = "Texts to explain or predict (quote each one); a text that starts with @ stays a text.",
        Arity = ArgumentArity.ZeroOrMore,
    };
    public readonly Option<string?> Input = new("--input")
    {
        Description = "File of texts: .jsonl (one {\"text\", \"id\"} object a line) or one text a line; - reads stdin.",
        HelpName = "FILE|-",
    };

    // Model
    public readonly Option<string?> Model = new("--model")
    {
        Description = "Model folder in Hugging Face layout, or a model id (submit: an id the workers know). Default: sentiment-minilm, the embedded model.",
        HelpName = "DIR|ID",
    };
    public readonly Option<string?> Device = new("--device")
    {
        Description = "cpu, cuda or cuda:N. Default: cuda when available, else cpu.",
        HelpName = "cpu|cuda",
    };

    // How to explain (explain and submit)
    public readonly Option<string?> Method = new("--method")
    {
        Description = "Attribution method. Default: deeplift (submit: the model's configured DefaultMethod).",
    };
    public readonly Option<string?> Target = new("--target")
    {
        Description = "Label name or class index to explain, or all: every output of the head (each class, each label of a multi-label head, each value of a regression head) in the rows of 'classes' (DeepLift: one forward pass for all). Default: each text's predicted class.",
        HelpName = "LABEL|INDEX|all",
    };
    public readonly Option<string> Output = new("--output")
    {
        Description = "What the scores explain.",
        DefaultValueFactory = _ => new ExplainRequest().Output,
    };
    public readonly Option<string> SoftmaxRule = new("--softmax-rule")
    {
        Description = "DeepLift's rule for the attention softmax (exact adds up; the others are for comparison).",
        DefaultValueFactory = _ => new ExplainRequest().SoftmaxRule,
    };
    public readonly Option<string> Precision = new("--precision")
    {
        Description = "Arithmetic precision. float16 needs a CUDA device (refused on CPU, where it gives NaN).",
        DefaultValueFactory = _ => new ExplainRequest().Precision,
    };
    public readonly Option<int> Steps = new("--steps")
    {
        Description = "Integration steps (integrated-gradients), 1..10000.",
        DefaultValueFactory = _ => new ExplainRequest().Steps,
    };
    public readonly Option<string> Integration = new("--integration")
    {
        Description = "Quadrature for integrated-gradients.",
        DefaultValueFactory = _ => new ExplainRequest().Integration,
    };
    public readonly Option<int> Samples = new("--samples")
    {
        Description = "Samples (gradient-shap), 1..10000.",
        DefaultValueFactory = _ => new ExplainRequest().Samples,
    };
    public readonly Option<string[]> Reference = new("--reference")
    {
        Description = "Reference input x0: pad, mask, unk, zero or a text of the same token length; repeat it for the SHAP methods. Default: pad (SHAP methods: pad mask unk zero).",
        HelpName = "pad|mask|unk|zero|TEXT",
        Arity = ArgumentArity.OneOrMore,
    };
    public readonly Option<int> BatchSize = new("--batch-size")
    {
        Description = "Texts per forward pass (after bucketing by token length).",
        DefaultValueFactory = _ => new ExplainRequest().BatchSize,
    };
    public readonly Option<int?> MaxLength = new("--max-length")
    {
        Description = "Truncate texts to N tokens (at least 2). Default: the model's maximum.",
        HelpName = "N",
    };
    public readonly Option<double?> DeltaThreshold = new("--delta-threshold")
    {
        Description = "Flag a text whose |delta| = |f(x) - f(x0) - sum of scores| is above X (absolute, output units; the same in explain and submit). Default: none (submit: the model's configured threshold).",
        HelpName = "X",
    };
    public readonly Option<double?> RelativeDeltaThreshold = new("--relative-delta-threshold")
    {
        Description = "Flag a text whose |delta| / |f(x) - f(x0)| is above X. Default: 1e-4 in explain (submit: the model's configured threshold). A job can only tighten the model's thresholds.",
        HelpName = "X",
    };

    public readonly Option<bool> Faithfulness = new("--faithfulness")
    {
        Description = "Also measure each text's faithfulness: ERASER comprehensiveness and sufficiency at 1/5/10/20 % of its tokens and the AOPC of the deletion and insertion curves (plain forwards of a few dozen perturbed inputs a text, batched).",
    };
    public readonly Option<double> WeakReferenceThreshold = new("--weak-reference-threshold")
    {
        Description = "Flag weak_reference when |p(x) - p(x0)| of the explained class is below P (a probability, 0..1): the scores may add up exactly and still say little. Heads without probabilities (regression) get no check (null).",
        HelpName = "P",
        DefaultValueFactory = _ => new ExplainRequest().WeakReferenceThreshold,
    };

    // Output
    public readonly Option<bool> Json = new("--json") { Description = "One JSON object a line on stdout instead of the terminal table." };
    public readonly Option<string?> Html = new("--html")
    {
        Description = "Also write a coloured HTML report to FILE (written whole or not at all).",
        HelpName = "FILE",
    };
    public readonly Option<string?> Out = new("--out")
    {
        Description = "Write the JSON lines to FILE instead of stdout (written whole or not at all: a failed run leaves an existing FILE untouched).",
        HelpName = "FILE",
    };

    // The fleet
    public readonly Option<string?> Transport = new("--transport")
    {
        Description = "inmemory (a worker in this process, no broker) or rabbitmq. Default: Worker:Transport of the configuration, rabbitmq when --rabbitmq is given, else inmemory.",
        HelpName = "inmemory|rabbitmq",
    };
    public readonly Option<string?> RabbitMq = new("--rabbitmq")
    {
        Description = "Broker URL amqp://user:pass@host:5672/vhost (or amqps://). Default: RabbitMq:Url of the configuration, else amqp://guest@localhost:5672/.",
        HelpName = "URL",
    };
    public readonly Option<string?> Config = new("--config")
    {
        Description = "Fleet configuration JSON. Default: $FLEET_CONFIG.",
        HelpName = "FILE",
    };
    public readonly Option<string?> ModelPath = new("--model-path")
    {
        Description = "Register folder DIR under the --model id (in-process worker).",
        HelpName = "DIR",
    };
    public readonly Option<string?> Store = new("--store")
    {
        Description = "Job store connection string: Data Source=FILE.db (SQLite) or Host=…;Database=… (PostgreSQL). Default: Store:ConnectionString of the configuration, else SQLite: ~/.cache/attributionfleet/jobs.db with rabbitmq, a temporary file of this process with inmemory.",
        HelpName = "CONNECTION_STRING",
    };
    public readonly Option<string?> Api = new("--api")
    {
        Description = "Read jobs through a worker's job API (http://worker:8080) instead of opening the store (clients without database credentials).",
        HelpName = "URL",
    };
    public readonly Option<bool> Delete = new("--delete") { Description = "Delete the job and its results from the job store instead of reading them." };
    public readonly Option<double> ConnectTimeout = new("--connect-timeout")
    {
        Description = "Give up connecting to the broker after SECONDS (exit 3, naming the host).",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => 30,
    };
    public readonly Option<double?> Timeout = new("--timeout")
    {
        Description = "Bound the whole run to SECONDS (exit 3; the job stays queued: collect it with fleet results). Default: no bound.",
        HelpName = "SECONDS",
    };
    public readonly Option<bool> NoWait = new("--no-wait") { Description = "Submit, print the job id and exit (needs a broker); collect later with fleet results." };
    public readonly Option<bool> Verbose = new("--verbose") { Description = "Log the fleet's information messages on stderr." };
    public readonly Option<Guid?> JobId = new("--job-id")
    {
        Description = "Job id (a GUID). Default: a new one. Submitting the same id again gives one result per text.",
        HelpName = "GUID",
    };
    public readonly Option<int?> TextsPerBatch = new("--texts-per-batch")
    {
        Description = "Texts per batch message. Default: Worker:TextsPerBatch of the workers.",
        HelpName = "N",
    };

    // The job report
    public readonly Argument<string> Results = new("RESULTS.jsonl")
    {
        Description = "The JSON lines of fleet explain --json, or of fleet submit --out / fleet results --out.",
    };
    public readonly Option<string> ReportHtml = new("--html")
    {
        Description = "The page to write (self-contained; written whole or not at all).",
        HelpName = "FILE",
        Required = true,
    };
    public readonly Option<string?> Title = new("--title") { Description = "The page's title. Default: fleet report.", HelpName = "TEXT" };
    public readonly Option<double> ReportRelativeDeltaThreshold = new("--relative-delta-threshold")
    {
        Description = "For lines without over_threshold (older files): relative delta above X counts as over. Lines that carry over_threshold keep their own.",
        HelpName = "X",
        DefaultValueFactory = _ => Commands.ReportOptions.DefaultRelativeDeltaThreshold,
    };

    // The worker
    public readonly Option<int?> HealthPort = new("--health-port") { Description = "Port of /health/live and /health/ready. Default: Worker:HealthPort.", HelpName = "N" };
    public readonly Option<int?> Concurrency = new("--concurrency") { Description = "Batches explained at once. Default: Worker:ConcurrentBatches (1 per device).", HelpName = "N" };

    public FleetOptions()
    {
        Method.AcceptOnlyFromAmong(AttributionMethods.Names);
        Output.AcceptOnlyFromAmong(ExplainRequest.Outputs);
        SoftmaxRule.AcceptOnlyFromAmong(ExplainRequest.SoftmaxRules);
        Precision.AcceptOnlyFromAmong(ExplainRequest.Precisions);
        Integration.AcceptOnlyFromAmong(ExplainRequest.Integrations);
        Transport.AcceptOnlyFromAmong("inmemory", "in-memory", "rabbitmq");
        Range(Steps, 1, 10_000);
        Range(Samples, 1, 10_000);
        Range(BatchSize, 1, 100_000);
        Positive(MaxLength, 2);
        Positive(TextsPerBatch, 1);
        Positive(HealthPort, 1);
        Positive(Concurrency, 1);
        NonNegative(DeltaThreshold);
        NonNegative(RelativeDeltaThreshold);
        ReportRelativeDeltaThreshold.Validators.Add(r =>
        {
            if (!Converted<double>(r, out var v)) return;
            if (!(v >= 0 && double.IsFinite(v))) r.AddError($"{ReportRelativeDeltaThreshold.Name} must be a non-negative number, got {v}");
        });
        WeakReferenceThreshold.Validators.Add(r =>
        {
            if (!Converted<double>(r, out var v)) return;
            if (!(v >= 0 && v <= 1)) r.AddError($"{WeakReferenceThreshold.Name} must be a probability between 0 and 1, got {v}");
        });
        Device.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string?>();
            if (v is null || v is "cpu" or "cuda" or "auto" || v.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(v[5..], out var n) && n >= 0) return;
            r.AddError($"--device '{v}': expected cpu, cuda or cuda:N");
        });
        RabbitMq.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string?>();
            if (v is null) return;
            if (!Uri.TryCreate(v, UriKind.Absolute, out var uri) || uri.Scheme is not ("amqp" or "amqps") || string.IsNullOrEmpty(uri.Host))
                r.AddError($"--rabbitmq '{Redact(v)}': expected a URL like amqp://user:pass@host:5672/vhost");
        });
        Api.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string?>();
            if (v is null) return;
            if (!Uri.TryCreate(v, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || string.IsNullOrEmpty(uri.Host))
                r.AddError($"--api '{Redact(v)}': expected a URL like http://worker:8080");
        });
        Store.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string?>() is { } v && string.IsNullOrWhiteSpace(v)) r.AddError("--store needs a connection string");
        });
        foreach (var seconds in new Option[] { ConnectTimeout, Timeout })
            seconds.Validators.Add(r =>
            {
                if (!Converted<object?>(r, out var v)) return;
                if (v is double d && !(d > 0 && d <= 86_400 * 30)) r.AddError($"{r.Option.Name} must be a positive number of seconds, got {d}");
            });
    }

    /// <summary>The explain flags as typed values (unset ones null).</summary>
    public ExplainFlags Flags(ParseResult p) => new(
        p.GetValue(Method), p.GetValue(Target), p.GetValue(Output)!, p.GetValue(SoftmaxRule)!, p.GetValue(Precision)!,
        p.GetValue(Steps), p.GetValue(Integration)!, p.GetValue(Samples), p.GetValue(Reference) ?? Array.Empty<string>(),
        p.GetValue(BatchSize), p.GetValue(MaxLength), p.GetValue(Faithfulness), p.GetValue(WeakReferenceThreshold));

    public FleetConnection Connection(ParseResult p) => new(
        p.GetValue(Transport), p.GetValue(RabbitMq), p.GetValue(Config), p.GetValue(ModelPath), p.GetValue(Model),
        TimeSpan.FromSeconds(p.GetValue(ConnectTimeout)), p.GetValue(Store), p.GetValue(Api));

    /// <summary>A URL for messages, its password hidden.</summary>
    public static string Redact(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var u) && u.UserInfo.Contains(':') ? url.Replace(u.UserInfo, u.UserInfo.Split(':')[0] + ":***") : url;

    /// <summary>
    /// The option's value, or false when its token does not convert (--steps lots): System.CommandLine reports that
    /// error itself, and reading the value in a validator would throw instead of printing it.
    /// </summary>
    private static bool Converted<T>(OptionResult r, out T value)
    {
        try
        {
            value = r.GetValueOrDefault<T>();
            return true;
        }
        catch (InvalidOperationException)
        {
            value = default!;
            return false;
        }
    }

    private static void Range(Option<int> option, int min, int max) =>
        option.Validators.Add(r =>
        {
            if (!Converted<int>(r, out var v)) return;
            if (v < min || v > max) r.AddError($"{option.Name} must be between {min} and {max}, got {v}");
        });

    private static void Positive(Option<int?> option, int min) =>
        option.Validators.Add(r =>
        {
            if (!Converted<int?>(r, out var v)) return;
            if (v is { } n && n < min) r.AddError($"{option.Name} must be at least {min}, got {n}");
        });

    private static void NonNegative(Option<double?> option) =>
        option.Validators.Add(r =>
        {
            if (!Converted<double?>(r, out var v)) return;
            if (v is { } d && !(d >= 0 && double.IsFinite(d))) r.AddError($"{option.Name} must be a non-negative number, got {d}");
        });
}

/// <summary>The explain flags, typed; what <c>explain</c> runs with and what <c>submit</c> sends.</summary>
public sealed record ExplainFlags(
    string? Method, string? Target, string Output, string SoftmaxRule, string Precision, int Steps, string Integration,
    int Samples, IReadOnlyList<string> References, int BatchSize, int? MaxLength, bool Faithfulness = false,
    double WeakReferenceThreshold = ExplainRequest.DefaultWeakReferenceThreshold)
{
    /// <summary>The engine request: the method's default references when none is given.</summary>
    public ExplainRequest ToRequest()
    {
        var method = Method ?? "deeplift";
        var references = References.Count > 0 ? References.ToList()
            : method is "deeplift-shap" or "gradient-shap" ? new List<string> { "pad", "mask", "unk", "zero" } : new List<string> { "pad" };
        return new ExplainRequest
        {
            Method = method, Target = Target, Output = Output, SoftmaxRule = SoftmaxRule, Precision = Precision, Steps = Steps,
            Integration = Integration, Samples = Samples, References = references, BatchSize = BatchSize, MaxLength = MaxLength,
            Faithfulness = Faithfulness, WeakReferenceThreshold = WeakReferenceThreshold,
        };
    }

    /// <summary>The job's options; method and references stay null when not given (the worker's and model's defaults).</summary>
    public Contracts.V1.AttributionOptions ToMessage() => new()
    {
        Method = Method, Target = Target, Output = Output, SoftmaxRule = SoftmaxRule, Precision = Precision, Steps = Steps,
        Integration = Integration, Samples = Samples, References = References.Count > 0 ? References.ToList() : null,
        BatchSize = BatchSize, MaxLength = MaxLength,
        Faithfulness = Faithfulness ? true : null, WeakReferenceThreshold = WeakReferenceThreshold,
    };
}

/// <summary>How a command reaches the fleet: the broker, and the job store (<see cref="Store"/>) or a worker's job API (<see cref="Api"/>).</summary>
public sealed record FleetConnection(string? Transport, string? RabbitMq, string? Config, string? ModelPath, string? ModelId, TimeSpan ConnectTimeout,
    string? Store = null, string? Api = null);
