using System.Security.Authentication;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Consumers;
using AttributionFleet.Worker.Health;
using AttributionFleet.Worker.Models;
using AttributionFleet.Worker.Store;
using AttributionFleet.Worker.Telemetry;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace AttributionFleet.Worker.Hosting;

/// <summary>The fleet's wiring: options from configuration, models, consumers, transport, health.</summary>
public static class FleetHostingExtensions
{
    /// <summary>
    /// Everything a worker (or a client, with <c>Worker:ConsumeJobs=false</c>) needs, bus included:
    /// <c>Worker:Transport</c> picks InMemory (default) or RabbitMq.
    /// </summary>
    public static IServiceCollection AddAttributionFleet(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddFleetServices(configuration);
        services.AddFleetTelemetry(configuration);
        var worker = configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();
        var rabbit = configuration.GetSection(RabbitMqOptions.Section).Get<RabbitMqOptions>() ?? new RabbitMqOptions();
        services.AddHostedService<BrokerLoginGate>(); // before the bus: it starts only once the broker takes the login
        services.AddMassTransit(x => x.AddFleetBus(worker, rabbit));
        services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = false;
            o.StopTimeout = TimeSpan.FromSeconds(worker.ShutdownTimeoutSeconds);
        });
        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(worker.ShutdownTimeoutSeconds + 5));
        return services;
    }

    /// <summary>Options, model registry, engine, planner, client, metrics (no exporter), health checks and hosted services, without the bus.</summary>
    public static IServiceCollection AddFleetServices(this IServiceCollection services, IConfiguration configuration)
    {
        services.Configure<WorkerOptions>(configuration.GetSection(WorkerOptions.Section));
        services.Configure<RabbitMqOptions>(configuration.GetSection(RabbitMqOptions.Section));
        services.Configure<LimitsOptions>(configuration.GetSection(LimitsOptions.Section));
        services.Configure<StoreOptions>(configuration.GetSection(StoreOptions.Section));
        services.Configure<ModelsOptions>(o => configuration.GetSection(ModelsOptions.Section).Bind(o.Models));
        services.AddFleetMetrics();
        services.TryAddSingleton<ModelRegistry>();
        // Every batch's libtorch calls on a long-lived engine thread (one per batch explained at once), not on whichever
        // pool thread the consumer got: see EngineThreads.
        services.TryAddSingleton(sp => new Engine.EngineThreads(Math.Max(1, sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<WorkerOptions>>().Value.ConcurrentBatches)));
        services.TryAddSingleton<IAttributionEngine, TextAttributionEngine>();
        services.TryAddSingleton<JobPlanner>();
        services.TryAddSingleton<FleetClient>();
        services.TryAddSingleton<IJobStore>(sp => JobStoreFactory.Create(sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<StoreOptions>>().Value,
            sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<WorkerOptions>>().Value));
        services.TryAddSingleton<IJobReader>(sp =>
            sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<StoreOptions>>().Value is { Api: { Length: > 0 } api } o
                ? new Http.HttpJobReader(api, o.ConnectTimeoutSeconds)
                : sp.GetRequiredService<IJobStore>());
        services.TryAddSingleton<JobOutcomes>();
        services.AddHostedService<JobStoreMigrator>();
        services.AddHostedService<JobRetention>();
        services.TryAddSingleton<ModelPreloadState>();
        services.AddHostedService<ModelPreloader>();
        services.AddHostedService<Http.FleetHttpServer>();
        services.AddHealthChecks()
            .AddCheck("process", () => HealthCheckResult.Healthy(), tags: new[] { Http.FleetHttpServer.LiveTag })
            .AddCheck<ModelsReadyHealthCheck>("models", tags: new[] { Http.FleetHttpServer.ReadyTag })
            .AddCheck<JobStoreHealthCheck>("store", tags: new[] { Http.FleetHttpServer.ReadyTag });
        return services;
    }

    /// <summary>The consumers (when this process consumes jobs) and the transport with the worker's receive endpoints.</summary>
    public static void AddFleetBus(this IBusRegistrationConfigurator x, WorkerOptions worker, RabbitMqOptions rabbit)
    {
        // MassTransit's usage telemetry reports to its vendor (workers here reach no network) and its endpoint observer
        // races when the client connects its result-queue endpoint while the bus starts ("Collection was modified",
        // seen once in CI).
        x.DisableUsageTelemetry();
        if (worker.ConsumeJobs)
        {
            x.AddConsumer<AttributionJobConsumer>();
            x.AddConsumer<AttributionBatchConsumer>();
        }
        if (worker.UsesRabbitMq)
        {
            var r = rabbit.Validated();
            x.UsingRabbitMq((context, cfg) =>
            {
                cfg.Host(r.Host, (ushort)r.Port, r.VirtualHost, h =>
                {
                    h.Username(r.Username);
                    h.Password(r.Password);
                    h.Heartbeat(r.HeartbeatSeconds);
                    h.MaxMessageSize(r.MaxMessageBytes);
                    h.RequestedConnectionTimeout(TimeSpan.FromSeconds(Math.Max(1, r.ConnectTimeoutSeconds)));
                    if (r.UseTls)
                        h.UseSsl(s =>
                        {
                            s.ServerName = r.TlsServerName ?? r.Host;
                            s.Protocol = SslProtocols.Tls12 | SslProtocols.Tls13;
                        });
                });
                cfg.ConfigureWorkerEndpoints(context, worker);
            });
        }
        else
        {
            x.UsingInMemory((context, cfg) => cfg.ConfigureWorkerEndpoints(context, worker));
        }
    }

    /// <summary>
    /// The job queue and the shared batch queue. Prefetch and concurrency are one batch per device by default, so a
    /// worker holds no batch it is not explaining and the others take the rest. Unexpected faults are retried with
    /// exponential back-off; malformed bodies and messages of unknown type go to the <c>_error</c> queue.
    /// </summary>
    public static void ConfigureWorkerEndpoints(this IBusFactoryConfigurator cfg, IBusRegistrationContext context, WorkerOptions worker)
    {
        // Messages no consumer here understands (unknown type) are poison too: <queue>_error, not <queue>_skipped.
        cfg.SendTopology.DeadLetterQueueNameFormatter = new ErrorQueueForSkippedMessages();
        // A non-finite result (NaN weights, overflow) must still travel (status non_finite), not fail serialization and
        // leave the job waiting for ever: NaN and Infinity are written as the JSON literals "NaN"/"Infinity" on the wire.
        cfg.ConfigureJsonSerializerOptions(o =>
        {
            o.NumberHandling |= System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals;
            return o;
        });
        if (!worker.ConsumeJobs) return;
        cfg.ReceiveEndpoint(worker.JobQueue, e =>
        {
            e.PrefetchCount = 1;
            e.ConcurrentMessageLimit = 1;
            e.UseFleetRetry(worker);
            e.ConfigureConsumer<AttributionJobConsumer>(context);
        });
        cfg.ReceiveEndpoint(worker.BatchQueue, e =>
        {
            int concurrent = Math.Max(1, worker.ConcurrentBatches);
            e.PrefetchCount = concurrent;
            e.ConcurrentMessageLimit = concurrent;
            e.UseFleetRetry(worker);
            e.ConfigureConsumer<AttributionBatchConsumer>(context);
        });
    }

    private static void UseFleetRetry(this IReceiveEndpointConfigurator e, WorkerOptions worker)
    {
        if (worker.RetryLimit <= 0) return;
        e.UseMessageRetry(r => r.Exponential(worker.RetryLimit, TimeSpan.FromMilliseconds(worker.RetryMinIntervalMs),
            TimeSpan.FromMilliseconds(worker.RetryMaxIntervalMs), TimeSpan.FromMilliseconds(worker.RetryMinIntervalMs)));
    }
}

/// <summary>Sends skipped messages (no consumer for their type) to the endpoint's <c>_error</c> queue with the other poison messages.</summary>
public sealed class ErrorQueueForSkippedMessages : IDeadLetterQueueNameFormatter
{
    public string FormatDeadLetterQueueName(string queueName) => queueName + "_error";
}
