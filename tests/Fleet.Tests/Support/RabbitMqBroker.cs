using System.Net.Sockets;
using Testcontainers.RabbitMq;
using Xunit;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// Where the RabbitMQ tests find a broker: a Testcontainers RabbitMQ where a Docker engine exists, otherwise the
/// broker named by <c>FLEET_TEST_RABBITMQ</c> (e.g. <c>amqp://guest:guest@localhost:5672/</c>, see .ci/services/rabbitmq.sh).
/// </summary>
public static class RabbitMqBroker
{
    public const string Variable = "FLEET_TEST_RABBITMQ";
    private static readonly Lazy<string?> SkipReasonValue = new(FindSkipReason);
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static string? _url;

    public static bool DockerAvailable =>
        File.Exists("/var/run/docker.sock") || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOCKER_HOST"));

    /// <summary>Null when a broker can be had; otherwise why the RabbitMQ tests are skipped.</summary>
    public static string? SkipReason => SkipReasonValue.Value;

    private static string? FindSkipReason()
    {
        if (DockerAvailable) return null;
        var url = Environment.GetEnvironmentVariable(Variable);
        if (string.IsNullOrWhiteSpace(url))
            return $"no RabbitMQ: no Docker engine for Testcontainers and {Variable} is not set (run .ci/services/rabbitmq.sh and export the line it prints)";
        var uri = new Uri(url);
        try
        {
            using var tcp = new TcpClient();
            if (!tcp.ConnectAsync(uri.Host, uri.Port > 0 ? uri.Port : 5672).Wait(TimeSpan.FromSeconds(2)))
                return $"no RabbitMQ: {Variable} names {uri.Host}:{uri.Port} but nothing answers there";
        }
        catch (AggregateException e)
        {
            return $"no RabbitMQ: {Variable} names {uri.Host}:{uri.Port} but connecting failed ({e.InnerException?.Message})";
        }
        return null;
    }

    /// <summary>The broker's amqp:// URL (starts the container on first use when Docker is there).</summary>
    public static async Task<string> Url()
    {
        await Gate.WaitAsync();
        try
        {
            if (_url is not null) return _url;
            if (DockerAvailable)
            {
                var container = new RabbitMqBuilder("rabbitmq:3.13-alpine").Build();
                await container.StartAsync();
                AppDomain.CurrentDomain.ProcessExit += (_, _) => container.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(10));
                return _url = container.GetConnectionString();
            }
            return _url = Environment.GetEnvironmentVariable(Variable)!;
        }
        finally
        {
            Gate.Release();
        }
    }
}

/// <summary>A fact that needs RabbitMQ: skipped, with the reason, when there is none.</summary>
public sealed class RabbitMqFactAttribute : FactAttribute
{
    public RabbitMqFactAttribute()
    {
        if (RabbitMqBroker.SkipReason is { } reason) Skip = reason;
    }
}
