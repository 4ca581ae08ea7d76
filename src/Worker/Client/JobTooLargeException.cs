namespace AttributionFleet.Worker.Client;

/// <summary>A job whose message would exceed <c>Limits:MaxMessageBytes</c>: refused before sending, naming the limit (one line).</summary>
public sealed class JobTooLargeException(long bytes, long limit)
    : Exception($"the job message is {bytes} bytes; the limit Limits:MaxMessageBytes is {limit}: split the input into several jobs")
{
    public long Bytes { get; } = bytes;
    public long Limit { get; } = limit;
}
