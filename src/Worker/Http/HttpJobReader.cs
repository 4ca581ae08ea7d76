using System.Net;
using System.Net.Http.Json;
using System.Runtime.CompilerServices;
using System.Text.Json;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Store;

namespace AttributionFleet.Worker.Http;

/// <summary>
/// Reads jobs through a worker's job API (<c>Store:Api</c>, e.g. <c>http://attribution-worker:8080</c>): the client needs no
/// database credentials. An unreachable API, or one whose store is down (503), is <see cref="FleetUnavailableException"/>.
/// </summary>
public sealed class HttpJobReader : IJobReader, IDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _base;

    public HttpJobReader(string baseUrl, int connectTimeoutSeconds)
    {
        _base = new Uri(baseUrl.TrimEnd('/') + "/");
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(Math.Max(1, connectTimeoutSeconds)) })
        {
            Timeout = Timeout.InfiniteTimeSpan, // the caller's token bounds waiting; connecting is bounded above
        };
    }

    public string Describe => $"the job API {_base}";

    public async Task<JobStatus?> Get(Guid jobId, CancellationToken cancellationToken = default) =>
        await Json<JobStatus>($"jobs/{jobId}", cancellationToken);

    public async Task<IReadOnlyList<int>> BatchIndexes(Guid jobId, CancellationToken cancellationToken = default) =>
        await Json<int[]>($"jobs/{jobId}/batches", cancellationToken) ?? Array.Empty<int>();

    public Task<AttributionBatchCompleted?> Batch(Guid jobId, int batchIndex, CancellationToken cancellationToken = default) =>
        Json<AttributionBatchCompleted>($"jobs/{jobId}/batches/{batchIndex}", cancellationToken);

    public async IAsyncEnumerable<TextAttribution> Results(Guid jobId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var response = await Send(HttpMethod.Get, $"jobs/{jobId}/results", HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (response.StatusCode == HttpStatusCode.NotFound) yield break;
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
        while (await ReadLine(reader, cancellationToken) is { } line)
            if (line.Length > 0) yield return JsonSerializer.Deserialize<TextAttribution>(line, SqlJobStore.Json)!;
    }

    public async Task<bool> Delete(Guid jobId, CancellationToken cancellationToken = default)
    {
        using var response = await Send(HttpMethod.Delete, $"jobs/{jobId}", HttpCompletionOption.ResponseContentRead, cancellationToken);
        return response.StatusCode != HttpStatusCode.NotFound;
    }

    private async Task<string?> ReadLine(StreamReader reader, CancellationToken cancellationToken)
    {
        try
        {
            return await reader.ReadLineAsync(cancellationToken);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            throw new FleetUnavailableException(Describe, e.Message, e);
        }
    }

    private async Task<T?> Json<T>(string path, CancellationToken cancellationToken) where T : class
    {
        using var response = await Send(HttpMethod.Get, path, HttpCompletionOption.ResponseContentRead, cancellationToken);
        if (response.StatusCode == HttpStatusCode.NotFound) return null;
        return await response.Content.ReadFromJsonAsync<T>(SqlJobStore.Json, cancellationToken);
    }

    private async Task<HttpResponseMessage> Send(HttpMethod method, string path, HttpCompletionOption completion, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(new HttpRequestMessage(method, new Uri(_base, path)), completion, cancellationToken);
        }
        catch (HttpRequestException e)
        {
            throw new FleetUnavailableException(Describe, (e.InnerException ?? e).Message.ReplaceLineEndings(" "), e);
        }
        catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new FleetUnavailableException(Describe, "connect timeout", e);
        }
        if (response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.NotFound) return response;
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        response.Dispose();
        string title = body;
        try
        {
            title = JsonDocument.Parse(body).RootElement.GetProperty("title").GetString() ?? body;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException) { }
        throw new FleetUnavailableException(Describe, $"{(int)response.StatusCode} {title}".ReplaceLineEndings(" "));
    }

    public void Dispose() => _http.Dispose();
}
