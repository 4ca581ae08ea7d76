using AttributionFleet.Cli.Parsing;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace AttributionFleet.Cli;

/// <summary>
/// A fleet host for the CLI commands: configuration from FLEET_CONFIG or --config (JSON), the environment
/// (Worker__Transport, RabbitMq__Url, RabbitMq__Password, Models__ID__Path …) and the options of <see cref="FleetConnection"/>.
/// </summary>
public static class FleetHost
{
    /// <summary>
    /// Builds the host. <paramref name="consumeJobs"/> null: consume jobs only with the in-memory transport (an in-process
    /// worker for <c>fleet submit</c>). --model-path registers DIR under the --model id.
    /// </summary>
    public static IHost Build(FleetConnection c, bool? consumeJobs, LogLevel minimumLevel, IDictionary<string, string?>? extra = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = Array.Empty<string>() });
        var config = c.Config ?? Environment.GetEnvironmentVariable("FLEET_CONFIG");
        if (config is not null && !File.Exists(config)) throw new UsageException($"--config {config}: file not found");
        builder.Configuration.AddFleetConfigFile(config);
        var overrides = new Dictionary<string, string?>();
        if (c.Transport is { } transport)
            overrides["Worker:Transport"] = transport.ToLowerInvariant() switch
            {
                "inmemory" or "in-memory" => "InMemory",
                "rabbitmq" => "RabbitMq",
                _ => throw new UsageException($"unknown --transport '{transport}'; expected inmemory or rabbitmq"),
            };
        if (c.RabbitMq is { } url)
        {
            overrides["RabbitMq:Url"] = url;
            overrides.TryAdd("Worker:Transport", "RabbitMq");
        }
        if (c.Store is { } store) overrides["Store:ConnectionString"] = store;
        if (c.Api is { } api) overrides["Store:Api"] = api;
        if (c.ModelPath is { } path)
        {
            var id = c.ModelId ?? throw new UsageException("--model-path needs --model ID (the id to register the folder under)");
            if (!Directory.Exists(path)) throw new UsageException($"--model-path {path}: directory not found");
            overrides[$"Models:{id}:Path"] = Path.GetFullPath(path);
        }
        foreach (var (k, v) in extra ?? new Dictionary<string, string?>()) overrides[k] = v;
        builder.Configuration.AddInMemoryCollection(overrides);
        var worker = builder.Configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Worker:ConsumeJobs"] = (consumeJobs ?? !worker.UsesRabbitMq).ToString(),
        });
        var rabbit = builder.Configuration.GetSection(RabbitMqOptions.Section).Get<RabbitMqOptions>() ?? new RabbitMqOptions();
        if (worker.UsesRabbitMq && !string.IsNullOrWhiteSpace(rabbit.Url) &&
            (!Uri.TryCreate(rabbit.Url, UriKind.Absolute, out var uri) || uri.Scheme is not ("amqp" or "amqps") || string.IsNullOrEmpty(uri.Host)))
            throw new UsageException($"RabbitMq:Url '{FleetOptions.Redact(rabbit.Url)}': expected a URL like amqp://user:pass@host:5672/vhost");
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        // MassTransit logs connection failures with stack traces: a client shows them only when verbose (it reports an
        // unreachable broker as one line itself); a worker (Information) shows its warnings and errors.
        builder.Logging.AddFilter((category, level) => level >= minimumLevel && (category?.StartsWith("MassTransit", StringComparison.Ordinal) != true
            || (level >= LogLevel.Warning && minimumLevel <= LogLevel.Information)));
        builder.Services.AddAttributionFleet(builder.Configuration);
        return builder.Build();
    }

    public static bool UsesRabbitMq(IHost host) => host.Services.GetRequiredService<IOptions<WorkerOptions>>().Value.UsesRabbitMq;

    /// <summary>
    /// Before the bus starts (MassTransit would retry an unreachable broker for ever, logging each attempt): connects
    /// to the broker once, retrying for at most <paramref name="connectTimeout"/>. Wrong credentials are not retried.
    /// Throws <see cref="FleetUnavailableException"/> naming the host; does nothing with the in-memory transport.
    /// </summary>
    public static async Task EnsureBrokerReachable(IHost host, TimeSpan connectTimeout, CancellationToken cancel)
    {
        if (!UsesRabbitMq(host)) return;
        var r = host.Services.GetRequiredService<IOptions<RabbitMqOptions>>().Value.Resolved();
        string where = $"the broker {r.Host}:{r.Port}";
        var factory = r.CheckConnectionFactory();
        factory.ClientProvidedName = "fleet-cli-check";
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        deadline.CancelAfter(connectTimeout);
        var started = DateTime.UtcNow;
        string cause = "no answer";
        while (true)
        {
            var left = connectTimeout - (DateTime.UtcNow - started);
            if (left <= TimeSpan.Zero) break;
            factory.RequestedConnectionTimeout = left < TimeSpan.FromSeconds(10) ? left : TimeSpan.FromSeconds(10);
            try
            {
                await using var connection = await factory.CreateConnectionAsync(deadline.Token);
                await connection.CloseAsync(CancellationToken.None);
                return;
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                throw;
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (Exception e) when (IsAuthentication(e))
            {
                throw new FleetUnavailableException(where, $"the broker refused user '{r.Username}' (wrong user name or password)", e);
            }
            catch (Exception e) when (e is BrokerUnreachableException or ConnectFailureException or IOException or System.Net.Sockets.SocketException
                or TimeoutException or OperationInterruptedException or AlreadyClosedException)
            {
                cause = Cause(e);
            }
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(500), deadline.Token);
            }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
                break;
            }
        }
        throw new FleetUnavailableException(where, $"no connection within --connect-timeout {connectTimeout.TotalSeconds:0.#} s ({cause})");
    }

    private static bool IsAuthentication(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is AuthenticationFailureException or PossibleAuthenticationFailureException) return true;
        return false;
    }

    private static string Cause(Exception e)
    {
        var x = e;
        while (x.InnerException is not null && x is BrokerUnreachableException or ConnectFailureException) x = x.InnerException;
        if (x is AggregateException { InnerExceptions.Count: > 0 } a) x = a.InnerExceptions[0];
        return x.Message.ReplaceLineEndings(" ").Trim();
    }
}
