namespace AttributionFleet.Worker.Client;

/// <summary>
/// The broker or the job store could not be reached or refused us (unreachable host, wrong credentials, connect
/// timeout). The message is one line naming the host and the cause; the CLI prints it as is and exits 3.
/// </summary>
public sealed class FleetUnavailableException(string host, string cause, Exception? inner = null, bool refused = false)
    : Exception($"cannot reach {host}: {cause}", inner)
{
    public string Host { get; } = host;
    public string Cause { get; } = cause;
    /// <summary>The service answered and refused us (wrong credentials, no such database): waiting will not help a client.</summary>
    public bool Refused { get; } = refused;
}
