using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>One log entry as written, with the state of every scope around it.</summary>
public sealed record CapturedLog(string Category, LogLevel Level, string Message, IReadOnlyDictionary<string, object?> Scope);

/// <summary>Keeps every log entry in memory with its scopes (as a console or OTLP logger with IncludeScopes would see them).</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider, ISupportExternalScope
{
    private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();
    public ConcurrentQueue<CapturedLog> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

    public void Dispose() { }

    private sealed class Logger(CapturingLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => provider._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var scope = new Dictionary<string, object?>();
            provider._scopes.ForEachScope((s, d) =>
            {
                if (s is IEnumerable<KeyValuePair<string, object>> pairs)
                    foreach (var (k, v) in pairs) d[k] = v;
            }, scope);
            provider.Entries.Enqueue(new CapturedLog(category, logLevel, formatter(state, exception), scope));
        }
    }
}
