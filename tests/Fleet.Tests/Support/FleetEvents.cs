using System.Text;
using System.Text.Json;
using RabbitMQ.Client;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// Counts the fleet's published events of one type on a broker: a queue of this test bound to MassTransit's exchange for the
/// message type (declared the way MassTransit declares it: fanout, durable), deleted at the end.
/// </summary>
public sealed class FleetEvents : IAsyncDisposable
{
    private readonly IConnection _connection;
    private readonly IChannel _channel;
    private readonly string _queue;

    private FleetEvents(IConnection connection, IChannel channel, string queue)
    {
        _connection = connection;
        _channel = channel;
        _queue = queue;
    }

    public static async Task<FleetEvents> Watch<T>(string url)
    {
        var connection = await new ConnectionFactory { Uri = new Uri(url) }.CreateConnectionAsync();
        var channel = await connection.CreateChannelAsync();
        var exchange = $"{typeof(T).Namespace}:{typeof(T).Name}";
        await channel.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: true, autoDelete: false);
        var queue = $"fleet-test-events-{Guid.NewGuid():N}";
        await channel.QueueDeclareAsync(queue, durable: false, exclusive: true, autoDelete: true);
        await channel.QueueBindAsync(queue, exchange, "");
        return new FleetEvents(connection, channel, queue);
    }

    /// <summary>Takes every event in the queue now; returns the job ids (the message's <c>jobId</c>).</summary>
    public async Task<List<Guid>> Drain()
    {
        var ids = new List<Guid>();
        while (await _channel.BasicGetAsync(_queue, autoAck: true) is { } m)
        {
            using var doc = JsonDocument.Parse(Encoding.UTF8.GetString(m.Body.Span));
            ids.Add(doc.RootElement.GetProperty("message").GetProperty("jobId").GetGuid());
        }
        return ids;
    }

    /// <summary>Waits until the job's event arrived, then <paramref name="settle"/> longer for any duplicate; returns how many came.</summary>
    public async Task<int> CountFor(Guid jobId, TimeSpan timeout, TimeSpan settle, Func<string>? context = null)
    {
        var seen = new List<Guid>();
        var deadline = DateTime.UtcNow + timeout;
        while (!seen.Contains(jobId))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no event for job {jobId} within {timeout.TotalSeconds} s\n{context?.Invoke()}");
            seen.AddRange(await Drain());
            await Task.Delay(100);
        }
        await Task.Delay(settle);
        seen.AddRange(await Drain());
        return seen.Count(id => id == jobId);
    }

    /// <summary>Whether a queue of this name exists on the broker.</summary>
    public async Task<bool> QueueExists(string name)
    {
        await using var probe = await _connection.CreateChannelAsync();
        try
        {
            await probe.QueueDeclarePassiveAsync(name);
            return true;
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try { await _channel.QueueDeleteAsync(_queue); } catch (Exception) { /* gone with the connection */ }
        await _channel.DisposeAsync();
        await _connection.DisposeAsync();
    }
}
