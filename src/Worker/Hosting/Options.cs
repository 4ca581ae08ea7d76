namespace AttributionFleet.Worker.Hosting;

/// <summary>The worker's own settings (section <c>Worker</c>).</summary>
public sealed class WorkerOptions
{
    public const string Section = "Worker";

    /// <summary><c>InMemory</c> (embedded default: one process, no broker) or <c>RabbitMq</c>.</summary>
    public string Transport { get; set; } = "InMemory";
    /// <summary>Whether this process consumes jobs and batches (false for a pure client such as <c>fleet submit</c>).</summary>
    public bool ConsumeJobs { get; set; } = true;
    /// <summary>Batches explained at once by this process: one per device by default.</summary>
    public int ConcurrentBatches { get; set; } = 1;
    /// <summary>Texts per batch message when the job does not say.</summary>
    public int TextsPerBatch { get; set; } = 8;
    /// <summary>Retries (with exponential back-off) of a batch that hit an unexpected engine fault; validation failures are never retried.</summary>
    public int RetryLimit { get; set; } = 3;
    public int RetryMinIntervalMs { get; set; } = 200;
    public int RetryMaxIntervalMs { get; set; } = 5000;
    /// <summary><c>auto</c> (cuda when available), <c>cpu</c>, <c>cuda</c>, <c>cuda:1</c> …</summary>
    public string Device { get; set; } = "auto";
    /// <summary>Intra-op threads of libtorch (0 = libtorch's default). Useful with several workers on one machine.</summary>
    public int TorchThreads { get; set; }
    /// <summary>
    /// Memory one DeepLift pass may take, MiB (0 = the device's default: 1024 on the CPU, 16384 on a GPU). A batch is
    /// attributed in as many passes as this needs; results do not depend on it. Measured on bert-base, batches of 16 ×
    /// 128 tokens: 1024 → passes of 8, worker peak RSS 1.6 GB.
    /// </summary>
    public int PassMemoryMB { get; set; }
    /// <summary>Memory budget for loaded models (float32 weight bytes); least recently used models are unloaded beyond it.</summary>
    public long ModelMemoryBudgetMB { get; set; } = 4096;
    /// <summary>Load every configured model at start (readiness waits for it).</summary>
    public bool PreloadModels { get; set; } = true;
    /// <summary>Port of the worker's HTTP server (Kestrel): /health/live, /health/ready, /metrics, the job API /jobs; 0 = none.</summary>
    public int HealthPort { get; set; }
    /// <summary><c>localhost</c> (default: loopback only) or <c>any</c> (every interface: containers and pods, for probes and scrapes).</summary>
    public string HttpListen { get; set; } = "localhost";
    /// <summary>How long a stopping worker waits for its in-flight batch; past it the batch is returned to the queue unacknowledged.</summary>
    public int ShutdownTimeoutSeconds { get; set; } = 60;
    public string JobQueue { get; set; } = Contracts.V1.FleetAddresses.JobQueue;
    public string BatchQueue { get; set; } = Contracts.V1.FleetAddresses.BatchQueue;
    /// <summary>Name reported in batch results (default: host/pid).</summary>
    public string? Name { get; set; }

    public bool UsesRabbitMq => string.Equals(Transport, "RabbitMq", StringComparison.OrdinalIgnoreCase);

    public string WorkerName => Name ?? $"{Environment.MachineName}/{Environment.ProcessId}";
}

/// <summary>Broker connection (section <c>RabbitMq</c>; environment <c>RabbitMq__Password</c> etc.). <see cref="Url"/>, when set, wins.</summary>
public sealed class RabbitMqOptions
{
    public const string Section = "RabbitMq";

    /// <summary><c>amqp://user:password@host:port/vhost</c> or <c>amqps://…</c>; overrides the fields below.</summary>
    public string? Url { get; set; }
    public string Host { get; set; } = "localhost";
    public int Port { get; set; } = 5672;
    public string VirtualHost { get; set; } = "/";
    /// <summary>No default: credentials come from configuration, the URL, or <see cref="PasswordFile"/> (never guest/guest).</summary>
    public string Username { get; set; } = "";
    public string Password { get; set; } = "";
    /// <summary>A file whose first line is the password (a mounted secret): not visible in <c>ps</c> or the environment.</summary>
    public string? PasswordFile { get; set; }
    public bool UseTls { get; set; }
    /// <summary>TLS server name (defaults to Host).</summary>
    public string? TlsServerName { get; set; }
    public ushort HeartbeatSeconds { get; set; } = 10;
    /// <summary>
    /// The largest message body this process receives (RabbitMQ.Client's limit, 64 MiB by default). Set the broker's
    /// <c>max_message_size</c> to the same value (deploy/rabbitmq/rabbitmq.conf): the broker then refuses what no worker could
    /// take, instead of a message that is redelivered forever. Must be at least <c>Limits:MaxMessageBytes</c> plus the envelope.
    /// </summary>
    public uint MaxMessageBytes { get; set; } = 64 * 1024 * 1024;
    /// <summary>How long a client waits for the broker to take a job before it reports the broker unreachable.</summary>
    public int ConnectTimeoutSeconds { get; set; } = 30;

    /// <summary>The fields with <see cref="Url"/> and <see cref="PasswordFile"/> applied.</summary>
    public RabbitMqOptions Resolved()
    {
        var resolved = WithUrl();
        if (string.IsNullOrWhiteSpace(PasswordFile)) return resolved;
        if (!File.Exists(PasswordFile)) throw new FleetConfigurationException($"RabbitMq:PasswordFile not found: {PasswordFile}");
        resolved.Password = File.ReadLines(PasswordFile).FirstOrDefault()?.Trim() ?? "";
        return resolved;
    }

    /// <summary>
    /// A RabbitMQ.Client factory for a one-off connection check with these fields (call on <see cref="Resolved"/>): no
    /// automatic recovery, since the caller decides how often to retry.
    /// </summary>
    public RabbitMQ.Client.ConnectionFactory CheckConnectionFactory() => new()
    {
        HostName = Host,
        Port = Port,
        VirtualHost = VirtualHost,
        UserName = Username,
        Password = Password,
        Ssl = new RabbitMQ.Client.SslOption { Enabled = UseTls, ServerName = TlsServerName ?? Host },
        AutomaticRecoveryEnabled = false,
    };

    /// <summary>Refuses to connect without credentials (there is no default user).</summary>
    public RabbitMqOptions Validated()
    {
        var r = Resolved();
        if (string.IsNullOrWhiteSpace(r.Username))
            throw new FleetConfigurationException("RabbitMq:Username is not set (nor a user in RabbitMq:Url): there is no default user; " +
                "give RabbitMq:Username and RabbitMq:Password or RabbitMq:PasswordFile");
        return r;
    }

    private RabbitMqOptions WithUrl()
    {
        if (string.IsNullOrWhiteSpace(Url))
            return new RabbitMqOptions
            {
                Host = Host, Port = Port, VirtualHost = VirtualHost, Username = Username, Password = Password, UseTls = UseTls,
                TlsServerName = TlsServerName, HeartbeatSeconds = HeartbeatSeconds, ConnectTimeoutSeconds = ConnectTimeoutSeconds,
                MaxMessageBytes = MaxMessageBytes,
            };
        var uri = new Uri(Url);
        var tls = uri.Scheme == "amqps";
        var user = uri.UserInfo.Split(':', 2);
        var vhost = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        return new RabbitMqOptions
        {
            Host = uri.Host,
            Port = uri.IsDefaultPort || uri.Port <= 0 ? (tls ? 5671 : 5672) : uri.Port,
            VirtualHost = vhost.Length == 0 ? "/" : vhost,
            Username = user[0].Length > 0 ? Uri.UnescapeDataString(user[0]) : Username,
            Password = user.Length > 1 ? Uri.UnescapeDataString(user[1]) : Password,
            UseTls = tls || UseTls,
            TlsServerName = TlsServerName,
            HeartbeatSeconds = HeartbeatSeconds,
            ConnectTimeoutSeconds = ConnectTimeoutSeconds,
            MaxMessageBytes = MaxMessageBytes,
        };
    }

    /// <summary>For logs: never the password.</summary>
    public override string ToString()
    {
        var r = WithUrl();
        return $"{(r.UseTls ? "amqps" : "amqp")}://{r.Username}@{r.Host}:{r.Port}/{(r.VirtualHost == "/" ? "" : r.VirtualHost)}";
    }
}

/// <summary>A setting that makes the fleet unusable as given (one line naming it; the worker exits 2).</summary>
public sealed class FleetConfigurationException(string message) : Exception(message);

/// <summary>One configured model (section <c>Models:&lt;id&gt;</c>).</summary>
public sealed class ModelOptions
{
    /// <summary>The model folder (config.json, model.safetensors, tokenizer files).</summary>
    public string Path { get; set; } = "";
    /// <summary>Method when a job names none.</summary>
    public string DefaultMethod { get; set; } = "deeplift";
    /// <summary>|delta| threshold (any method, unless <see cref="Methods"/> names one); a job may only ask for a stricter one; null = none.</summary>
    public double? DeltaThreshold { get; set; }
    /// <summary>Threshold on |delta| / |f(x) − f(x0)|, the same way.</summary>
    public double? RelativeDeltaThreshold { get; set; }
    /// <summary>Per method (<c>Models:&lt;id&gt;:Methods:deeplift:RelativeDeltaThreshold</c>): overrides the model's thresholds for that method.</summary>
    public Dictionary<string, DeltaThresholdOptions> Methods { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>The thresholds for <paramref name="method"/>, tightened by the job's (a job cannot loosen them).</summary>
    public (double? Absolute, double? Relative) Thresholds(string method, double? jobAbsolute, double? jobRelative)
    {
        var perMethod = Methods.FirstOrDefault(p => string.Equals(p.Key, method, StringComparison.OrdinalIgnoreCase)).Value;
        double? absolute = perMethod?.DeltaThreshold ?? DeltaThreshold;
        double? relative = perMethod?.RelativeDeltaThreshold ?? RelativeDeltaThreshold;
        return (Stricter(absolute, jobAbsolute), Stricter(relative, jobRelative));
    }

    private static double? Stricter(double? configured, double? job) =>
        configured is { } c && job is { } j ? Math.Min(c, j) : configured ?? job;
}

/// <summary>Delta thresholds of one method of a model.</summary>
public sealed class DeltaThresholdOptions
{
    public double? DeltaThreshold { get; set; }
    public double? RelativeDeltaThreshold { get; set; }
}

/// <summary>The configured models by id (section <c>Models</c>). Jobs name an id, never a path.</summary>
public sealed class ModelsOptions
{
    public const string Section = "Models";
    public Dictionary<string, ModelOptions> Models { get; set; } = new(StringComparer.OrdinalIgnoreCase);
}

/// <summary>Limits on what a job may ask (section <c>Limits</c>); exceeding one fails the job naming the limit.</summary>
public sealed class LimitsOptions
{
    public const string Section = "Limits";
    public int MaxTextsPerJob { get; set; } = 10_000;
    public int MaxCharactersPerText { get; set; } = 20_000;
    /// <summary>Serialized size of the submit message.</summary>
    public int MaxMessageBytes { get; set; } = 16 * 1024 * 1024;
}
