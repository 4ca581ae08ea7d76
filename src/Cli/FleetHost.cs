using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli;

/// <summary>
/// A fleet host for the CLI commands: configuration from FLEET_CONFIG or --config (JSON), the environment
/// (Worker__Transport, RabbitMq__Url, RabbitMq__Password, Models__ID__Path …) and the options below.
/// </summary>
public static class FleetHost
{
    public static readonly string[] ValueOptions = { "transport", "rabbitmq", "config", "model-path", "store", "api" };

    public const string OptionsUsage = "[--transport inmemory|rabbitmq] [--rabbitmq amqp://user@host:5672/vhost] [--store CONNECTION_STRING | --api http://worker:8080] [--config fleet.json] [--model-path DIR]";

    /// <summary>
    /// Builds the host. <paramref name="consumeJobs"/> null: consume jobs only with the in-memory transport (an in-process
    /// worker for <c>fleet submit</c>). --model-path registers DIR under the --model id.
    /// </summary>
    public static IHost Build(CommandLine cl, bool? consumeJobs, LogLevel minimumLevel, IDictionary<string, string?>? extra = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = Array.Empty<string>() });
        builder.Configuration.AddFleetConfigFile(cl.Value("config") ?? Environment.GetEnvironmentVariable("FLEET_CONFIG"));
        var overrides = new Dictionary<string, string?>();
        if (cl.Value("transport") is { } transport)
            overrides["Worker:Transport"] = transport.ToLowerInvariant() switch
            {
                "inmemory" or "in-memory" => "InMemory",
                "rabbitmq" => "RabbitMq",
                _ => throw new UsageException($"unknown --transport '{transport}'; expected inmemory or rabbitmq"),
            };
        if (cl.Value("rabbitmq") is { } url)
        {
            overrides["RabbitMq:Url"] = url;
            overrides.TryAdd("Worker:Transport", "RabbitMq");
        }
        if (cl.Value("store") is { } store) overrides["Store:ConnectionString"] = store;
        if (cl.Value("api") is { } api) overrides["Store:Api"] = api;
        if (cl.Value("model-path") is { } path)
        {
            var id = cl.Value("model") ?? throw new UsageException("--model-path needs --model ID (the id to register the folder under)");
            overrides[$"Models:{id}:Path"] = Path.GetFullPath(path);
        }
        foreach (var (k, v) in extra ?? new Dictionary<string, string?>()) overrides[k] = v;
        builder.Configuration.AddInMemoryCollection(overrides);
        var worker = builder.Configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Worker:ConsumeJobs"] = (consumeJobs ?? !worker.UsesRabbitMq).ToString(),
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        // MassTransit logs connection failures with stack traces: a client shows them only when verbose (it reports an
        // unreachable broker as one line itself); a worker (Information) shows its warnings and errors.
        builder.Logging.AddFilter((category, level) => level >= minimumLevel && (category?.StartsWith("MassTransit", StringComparison.Ordinal) != true
            || (level >= LogLevel.Warning && minimumLevel <= LogLevel.Information)));
        builder.Services.AddAttributionFleet(builder.Configuration);
        return builder.Build();
    }

    public static bool UsesRabbitMq(IHost host) =>
        host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<WorkerOptions>>().Value.UsesRabbitMq;
}
